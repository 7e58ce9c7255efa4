"""The operator's pure builders, as specifications: what each built object must and must not hold.

No cluster is needed: the builders return manifests, checked here field by field and, once, by
``kubernetes-validate`` against the Kubernetes OpenAPI schemas.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions

from mas.manifests import AgentManifest
from mas_operator.builders import (
    CREDENTIALS_DIR,
    SPEC_HASH_ANNOTATION,
    BuildError,
    agent_labels,
    agent_ready,
    condition,
    credentials_secret,
    deployment,
    set_condition,
    spec_hash,
)

UID = "0b7c5a52-3f0e-4c4e-9a36-6f1d2f0c9a11"
KIDS = ("kidAAAAAAAAAAAA1", "kid-_BBBBBBBBBB2")
SIDECAR_IMAGE = "registry.example/mas-sidecar:1.0"
REDIS_URL = "redis://mas-agent-team-worker:s3cret@redis.mas.svc:6379/0"


def make_agent(**spec: Any) -> AgentManifest:
    return AgentManifest.model_validate(
        {
            "apiVersion": "mas.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "worker", "namespace": "team"},
            "spec": {
                "image": "registry.example/worker:2",
                "capabilities": ["summarize", "translate"],
                "roles": ["reader"],
                "replicas": 2,
                "env": [{"name": "MODE", "value": "fast"}],
                "delivery": {"maxAttempts": 7, "leaseSeconds": 45},
                **spec,
            },
        }
    )


def build(agent: AgentManifest) -> dict[str, Any]:
    return deployment(
        agent=agent,
        owner_uid=UID,
        sidecar_image=SIDECAR_IMAGE,
        spec_hash=spec_hash(agent),
        trust_kids=KIDS,
    )


def files() -> dict[str, bytes]:
    return {
        "agent.key": b"-----BEGIN PRIVATE KEY-----\n...\n",
        "token": b"header.claims.signature\n",
        f"trust/{KIDS[0]}.pub": b"-----BEGIN PUBLIC KEY-----\nA\n",
        f"trust/{KIDS[1]}.pub": b"-----BEGIN PUBLIC KEY-----\nB\n",
        "redis-url": REDIS_URL.encode(),
    }


def containers(built: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in built["spec"]["template"]["spec"]["containers"]}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# -- labels and owner references ----------------------------------------------------------------


def test_labels_name_the_agent() -> None:
    assert agent_labels(make_agent()) == {
        "app.kubernetes.io/name": "mas-agent",
        "app.kubernetes.io/instance": "worker",
        "app.kubernetes.io/managed-by": "mas-operator",
        "mas.dev/agent": "worker",
    }


def test_owner_references_point_at_the_agent() -> None:
    agent = make_agent()
    secret = credentials_secret(agent=agent, owner_uid=UID, files=files())
    for built in (build(agent), secret):
        assert built["metadata"]["namespace"] == "team"
        assert built["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "mas.dev/v1alpha1",
                "kind": "Agent",
                "name": "worker",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


# -- the Secret ---------------------------------------------------------------------------------


def test_secret_holds_the_credential_files_and_redis_url() -> None:
    secret = credentials_secret(agent=make_agent(), owner_uid=UID, files=files())
    assert secret["metadata"]["name"] == "worker-mas-credentials"
    assert secret["type"] == "Opaque"
    decoded = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert decoded == {
        "agent.key": files()["agent.key"],
        "token": files()["token"],
        f"trust.{KIDS[0]}.pub": files()[f"trust/{KIDS[0]}.pub"],
        f"trust.{KIDS[1]}.pub": files()[f"trust/{KIDS[1]}.pub"],
        "redis-url": REDIS_URL.encode(),
    }


@pytest.mark.parametrize("missing", ["agent.key", "token", "redis-url", "trust"])
def test_secret_refuses_incomplete_credentials(missing: str) -> None:
    partial = {k: v for k, v in files().items() if not k.startswith(missing)}
    with pytest.raises(BuildError):
        credentials_secret(agent=make_agent(), owner_uid=UID, files=partial)


def test_secret_refuses_badly_named_files() -> None:
    with pytest.raises(BuildError):
        credentials_secret(
            agent=make_agent(), owner_uid=UID, files={**files(), "trust/x.pem": b"x"}
        )


# -- the Deployment -----------------------------------------------------------------------------


def test_agent_container_has_no_redis_credentials_and_no_credentials_mount() -> None:
    agent_container = containers(build(make_agent()))["agent"]
    env = env_of(agent_container)
    assert env == {
        "MODE": "fast",
        "MAS_SIDECAR_URL": "http://127.0.0.1:8790",
        "MAS_AGENT_ID": "team/worker",
    }
    assert "s3cret" not in repr(agent_container)
    assert "secretKeyRef" not in repr(agent_container)
    assert "volumeMounts" not in agent_container
    assert agent_container["image"] == "registry.example/worker:2"


def test_agent_cannot_override_the_sidecar_url() -> None:
    agent = make_agent(env=[{"name": "MAS_SIDECAR_URL", "value": "http://evil:1"}])
    env = containers(build(agent))["agent"]["env"]
    assert [e for e in env if e["name"] == "MAS_SIDECAR_URL"] == [
        {"name": "MAS_SIDECAR_URL", "value": "http://127.0.0.1:8790"}
    ]


def test_secret_is_mounted_only_in_the_sidecar_read_only() -> None:
    built = build(make_agent(volumes=[{"name": "data", "emptyDir": {}}],
                             volumeMounts=[{"name": "data", "mountPath": "/data"}]))  # fmt: skip
    pod = built["spec"]["template"]["spec"]
    secret_volumes = [v for v in pod["volumes"] if "secret" in v]
    assert len(secret_volumes) == 1
    volume = secret_volumes[0]
    assert volume["secret"]["secretName"] == "worker-mas-credentials"
    # The layout of mas.credentials: agent.key, token, trust/<kid>.pub; redis-url is not a file.
    assert volume["secret"]["items"] == [
        {"key": "agent.key", "path": "agent.key"},
        {"key": "token", "path": "token"},
        {"key": f"trust.{KIDS[1]}.pub", "path": f"trust/{KIDS[1]}.pub"},
        {"key": f"trust.{KIDS[0]}.pub", "path": f"trust/{KIDS[0]}.pub"},
    ]
    by_name = containers(built)
    assert by_name["mas-sidecar"]["volumeMounts"] == [
        {"name": volume["name"], "mountPath": CREDENTIALS_DIR, "readOnly": True}
    ]
    assert by_name["agent"]["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]


def test_sidecar_gets_redis_url_from_the_secret_and_its_settings() -> None:
    sidecar = containers(build(make_agent()))["mas-sidecar"]
    assert sidecar["image"] == SIDECAR_IMAGE
    assert sidecar["command"] == [
        "mas", "sidecar", "--agent-id", "team/worker", "--port", "8790",
    ]  # fmt: skip
    assert env_of(sidecar) == {
        "MAS_REDIS_URL": {"secretKeyRef": {"name": "worker-mas-credentials", "key": "redis-url"}},
        "MAS_CREDENTIALS_DIR": CREDENTIALS_DIR,
        "MAS_REPLICA_ID": {"fieldRef": {"fieldPath": "metadata.name"}},
        "MAS_CAPABILITIES": "summarize,translate",
        "MAS_ROLES": "reader",
        "MAS_MAX_ATTEMPTS": "7",
        "MAS_LEASE_MS": "45000",
    }
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_spec_sidecar_image_and_port_win() -> None:
    built = build(make_agent(sidecar={"image": "mine/sidecar:9", "port": 9100}))
    by_name = containers(built)
    assert by_name["mas-sidecar"]["image"] == "mine/sidecar:9"
    assert by_name["mas-sidecar"]["command"][-1] == "9100"
    assert env_of(by_name["agent"])["MAS_SIDECAR_URL"] == "http://127.0.0.1:9100"


def test_sidecar_probes_hit_its_port_on_loopback() -> None:
    sidecar = containers(build(make_agent(sidecar={"port": 9100})))["mas-sidecar"]
    for key, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        # Without hostNetwork the kubelet reaches only the pod IP, where the sidecar does not
        # listen, so the probe runs in the container against 127.0.0.1.
        command = sidecar[key]["exec"]["command"]
        assert f"http://127.0.0.1:9100{path}" in command[-1]


def test_host_network_settings() -> None:
    agent = make_agent(
        hostNetwork=True,
        hostAliases=[{"ip": "10.0.0.5", "hostnames": ["llm.internal"]}],
    )
    built = build(agent)
    pod = built["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["hostAliases"] == [{"ip": "10.0.0.5", "hostnames": ["llm.internal"]}]
    sidecar = containers(built)["mas-sidecar"]
    assert sidecar["livenessProbe"]["httpGet"] == {
        "host": "127.0.0.1",
        "path": "/healthz",
        "port": 8790,
    }
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert built["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    plain_deployment = build(make_agent())
    assert plain_deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    plain = plain_deployment["spec"]["template"]["spec"]
    assert "hostNetwork" not in plain
    assert "dnsPolicy" not in plain


def test_pod_settings_come_from_the_spec() -> None:
    resources = {"limits": {"cpu": "1", "memory": "1Gi"}}
    toleration = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    built = build(
        make_agent(
            serviceAccountName="worker-sa",
            nodeSelector={"pool": "agents"},
            tolerations=[toleration],
            resources=resources,
        )
    )
    pod = built["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "worker-sa"
    assert "automountServiceAccountToken" not in pod
    assert pod["nodeSelector"] == {"pool": "agents"}
    assert pod["tolerations"] == [toleration]
    assert containers(built)["agent"]["resources"] == resources
    assert "resources" not in containers(built)["mas-sidecar"]
    assert built["spec"]["replicas"] == 2
    labels = built["spec"]["template"]["metadata"]["labels"]
    assert built["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_pods_get_no_service_account_token_unless_the_spec_names_an_account() -> None:
    pod = build(make_agent())["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod


def test_agent_command_and_args_come_from_the_spec() -> None:
    built = build(make_agent(command=["python", "/app/worker.py"], args=["--verbose"]))
    agent_container = containers(built)["agent"]
    assert agent_container["command"] == ["python", "/app/worker.py"]
    assert agent_container["args"] == ["--verbose"]
    plain = containers(build(make_agent()))["agent"]
    assert "command" not in plain
    assert "args" not in plain


def test_agent_without_image_is_refused() -> None:
    with pytest.raises(BuildError, match=r"spec\.image"):
        build(make_agent(image=None))


def test_same_input_gives_identical_output() -> None:
    agent = make_agent()
    assert build(agent) == build(make_agent())
    assert spec_hash(agent) == spec_hash(make_agent())
    assert len(spec_hash(agent)) == 16
    assert int(spec_hash(agent), 16) >= 0
    secret = credentials_secret(agent=agent, owner_uid=UID, files=files())
    assert secret == credentials_secret(agent=agent, owner_uid=UID, files=files())


def test_spec_change_changes_the_pod_template_hash() -> None:
    before = build(make_agent())
    after = build(make_agent(image="registry.example/worker:3"))
    hash_before = before["spec"]["template"]["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    hash_after = after["spec"]["template"]["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    assert hash_before != hash_after
    expected = copy.deepcopy(before)
    expected["spec"]["template"]["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = hash_after
    containers(expected)["agent"]["image"] = "registry.example/worker:3"
    assert after == expected


def test_scaling_does_not_roll_the_pods() -> None:
    assert spec_hash(make_agent(replicas=5)) == spec_hash(make_agent())
    assert spec_hash(make_agent(deletionPolicy="Delete")) == spec_hash(make_agent())
    assert spec_hash(make_agent(roles=["writer"])) != spec_hash(make_agent())


@pytest.mark.parametrize("version", sorted({all_versions()[0], all_versions()[-1]}))
def test_built_objects_are_valid_kubernetes(version: str) -> None:
    agent = make_agent(
        hostNetwork=True,
        hostAliases=[{"ip": "10.0.0.5", "hostnames": ["llm.internal"]}],
        serviceAccountName="worker-sa",
        nodeSelector={"pool": "agents"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        resources={"requests": {"cpu": "100m"}},
        volumes=[{"name": "data", "emptyDir": {}}],
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
    )
    for built in (
        build(agent),
        build(make_agent()),
        credentials_secret(agent=agent, owner_uid=UID, files=files()),
    ):
        kubernetes_validate.validate(built, version, strict=True)


# -- conditions ---------------------------------------------------------------------------------


def ready(status: bool, now: str, reason: str = "Available") -> dict[str, Any]:
    return condition(type="Ready", status=status, reason=reason, message="m", generation=3, now=now)


def test_condition_follows_api_conventions() -> None:
    assert ready(True, "2024-05-01T10:00:00Z") == {
        "type": "Ready",
        "status": "True",
        "reason": "Available",
        "message": "m",
        "lastTransitionTime": "2024-05-01T10:00:00Z",
        "observedGeneration": 3,
    }
    assert ready(False, "2024-05-01T10:00:00Z")["status"] == "False"


def test_set_condition_keeps_the_transition_time_while_the_status_holds() -> None:
    other = {"type": "CredentialsIssued", "status": "True", "lastTransitionTime": "t0"}
    first = set_condition([other], ready(False, "t1", "RolloutInProgress"))
    assert first == [other, ready(False, "t1", "RolloutInProgress")]
    same = set_condition(first, ready(False, "t2", "ReplicasUnavailable"))
    assert same[1]["lastTransitionTime"] == "t1"
    assert same[1]["reason"] == "ReplicasUnavailable"
    flipped = set_condition(same, ready(True, "t3"))
    assert flipped[1]["lastTransitionTime"] == "t3"
    assert flipped[0] == other
    assert first[1]["lastTransitionTime"] == "t1"  # inputs are not modified


# -- readiness ----------------------------------------------------------------------------------


def status(**fields: Any) -> dict[str, Any]:
    return {
        "observedGeneration": 4,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
        **fields,
    }


def test_ready_when_every_replica_is_updated_and_available() -> None:
    ok, why = agent_ready(deployment_status=status(), deployment_generation=4, replicas=2)
    assert ok
    assert "2 of 2" in why


@pytest.mark.parametrize(
    ("fields", "generation", "words"),
    [
        ({"observedGeneration": 3}, 4, "generation 4"),
        ({}, 5, "generation 5"),
        ({"updatedReplicas": 1, "replicas": 3}, 4, "1 of 2 replicas updated"),
        ({"replicas": 3}, 4, "old replicas"),
        ({"availableReplicas": 1}, 4, "1 of 2 replicas available"),
        ({"availableReplicas": None}, 4, "0 of 2 replicas available"),
        (
            {"conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]},
            4,
            "stuck",
        ),
    ],
)
def test_not_ready(fields: dict[str, Any], generation: int, words: str) -> None:
    ok, why = agent_ready(
        deployment_status=status(**fields), deployment_generation=generation, replicas=2
    )
    assert not ok
    assert words in why


def test_not_ready_before_the_first_status() -> None:
    ok, _ = agent_ready(deployment_status={}, deployment_generation=1, replicas=1)
    assert not ok


def test_not_ready_when_the_agent_was_just_scaled() -> None:
    ok, why = agent_ready(deployment_status=status(), deployment_generation=4, replicas=3)
    assert not ok
    assert "2 of 3" in why
