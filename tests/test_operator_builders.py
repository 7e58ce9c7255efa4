"""The operator's pure builders, as specifications: what each built object must and must not hold.

No cluster is needed: the builders return manifests, checked here field by field and, once, by
``kubernetes-validate`` against the Kubernetes OpenAPI schemas.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import replace
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions
from pydantic import ValidationError

from mas_core.manifests import AgentManifest
from mas_operator.builders import (
    CREDENTIALS_DIR,
    RESTRICTED_VOLUME_TYPES,
    SPEC_HASH_ANNOTATION,
    BuildError,
    PodRefused,
    a2a_service,
    agent_labels,
    credentials_secret,
    deployment,
    refusals,
    spec_hash,
)
from mas_operator.config import OperatorConfig

UID = "0b7c5a52-3f0e-4c4e-9a36-6f1d2f0c9a11"
KIDS = ("kidAAAAAAAAAAAA1", "kid-_BBBBBBBBBB2")
SIDECAR_IMAGE = "registry.example/mas-sidecar:1.0"
REDIS_URL = "redis://mas-agent-team-worker:s3cret@redis.mas.svc:6379/0"
API_TOKEN = "kL0p7nXq2vT9wY4zA1bC3dE5fG6hJ8kM0nP2qR4sT6u"
SETTINGS = OperatorConfig(
    redis_url="redis://redis.mas.svc:6379/0",
    agent_redis_url="redis://redis.mas.svc:6379/0",
    sidecar_image=SIDECAR_IMAGE,
)
PERMISSIVE = replace(
    SETTINGS, allow_host_network=True, allow_host_path=True, allow_sidecar_image=True
)


def make_agent(namespace: str = "team", **spec: Any) -> AgentManifest:
    return AgentManifest.model_validate(
        {
            "apiVersion": "mas.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "worker", "namespace": namespace},
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


def build(agent: AgentManifest, settings: OperatorConfig = SETTINGS) -> dict[str, Any]:
    return deployment(
        agent=agent,
        owner_uid=UID,
        settings=settings,
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
        "api-token": API_TOKEN.encode(),
    }


def containers(built: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in built["spec"]["template"]["spec"]["containers"]}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


A2A = {
    "description": "Summarizes.",
    "expose": True,
    "port": 8791,
    "clients": [
        {"name": "partner", "secretKeyRef": {"name": "a2a-keys", "key": "partner-key"}},
        {"name": "other", "secretKeyRef": {"name": "other-keys", "key": "k", "optional": True}},
    ],
}


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


def test_secret_holds_the_credential_files_redis_url_and_api_token() -> None:
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
        "api-token": API_TOKEN.encode(),
    }


@pytest.mark.parametrize("missing", ["agent.key", "token", "redis-url", "api-token", "trust"])
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


def test_agent_container_gets_its_api_token_and_no_other_credential_nor_a_mount() -> None:
    agent_container = containers(build(make_agent()))["agent"]
    env = env_of(agent_container)
    assert env == {
        "MODE": "fast",
        "MAS_SIDECAR_URL": "http://127.0.0.1:8790",
        "MAS_AGENT_ID": "team/worker",
        # the one key of the credentials Secret it may have, as a value
        "MAS_SIDECAR_TOKEN": {
            "secretKeyRef": {"name": "worker-mas-credentials", "key": "api-token"}
        },
    }
    assert "s3cret" not in repr(agent_container)
    assert repr(agent_container).count("secretKeyRef") == 1
    assert "volumeMounts" not in agent_container
    assert agent_container["image"] == "registry.example/worker:2"


def test_agent_cannot_override_the_sidecar_url_or_token() -> None:
    agent = make_agent(
        env=[
            {"name": "MAS_SIDECAR_URL", "value": "http://evil:1"},
            {"name": "MAS_SIDECAR_TOKEN", "value": "guessed-token-0123"},
            {"name": "MAS_SIDECAR_TOKEN_FILE", "value": "/elsewhere"},
        ]
    )
    env = containers(build(agent))["agent"]["env"]
    assert [e for e in env if e["name"] == "MAS_SIDECAR_URL"] == [
        {"name": "MAS_SIDECAR_URL", "value": "http://127.0.0.1:8790"}
    ]
    assert [e["name"] for e in env if e["name"].startswith("MAS_SIDECAR_TOKEN")] == [
        "MAS_SIDECAR_TOKEN"
    ]
    assert "guessed-token-0123" not in repr(env)


def test_the_secrets_are_mounted_only_in_the_sidecar_read_only() -> None:
    built = build(make_agent(volumes=[{"name": "data", "emptyDir": {}}],
                             volumeMounts=[{"name": "data", "mountPath": "/data"}]))  # fmt: skip
    pod = built["spec"]["template"]["spec"]
    volume, remotes = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "worker-mas-credentials"
    # The external agents' tokens: every key, so the operator can add and remove them while the
    # pod runs; optional, so the pod never waits for it.
    assert remotes["secret"] == {
        "secretName": "worker-mas-remotes", "defaultMode": 0o444, "optional": True
    }  # fmt: skip
    # The layout of mas_core.identity.credentials: agent.key, token, redis-url, api-token,
    # trust/<kid>.pub.
    assert volume["secret"]["items"] == [
        {"key": "agent.key", "path": "agent.key"},
        {"key": "token", "path": "token"},
        {"key": "redis-url", "path": "redis-url"},
        {"key": "api-token", "path": "api-token"},
        {"key": f"trust.{KIDS[1]}.pub", "path": f"trust/{KIDS[1]}.pub"},
        {"key": f"trust.{KIDS[0]}.pub", "path": f"trust/{KIDS[0]}.pub"},
    ]
    by_name = containers(built)
    assert by_name["mas-sidecar"]["volumeMounts"] == [
        {"name": volume["name"], "mountPath": CREDENTIALS_DIR, "readOnly": True},
        {"name": remotes["name"], "mountPath": "/var/run/mas/a2a-remotes", "readOnly": True},
    ]
    assert env_of(by_name["mas-sidecar"])["MAS_A2A_REMOTES_DIR"] == "/var/run/mas/a2a-remotes"
    assert by_name["agent"]["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]


def test_sidecar_gets_redis_url_and_token_as_files_of_the_secret_and_its_settings() -> None:
    sidecar = containers(build(make_agent()))["mas-sidecar"]
    assert sidecar["image"] == SIDECAR_IMAGE
    assert sidecar["command"] == [
        "mas", "sidecar", "--agent-id", "team/worker", "--port", "8790",
    ]  # fmt: skip
    assert env_of(sidecar) == {
        "MAS_REDIS_URL_FILE": f"{CREDENTIALS_DIR}/redis-url",
        "MAS_SIDECAR_TOKEN_FILE": f"{CREDENTIALS_DIR}/api-token",
        "MAS_CREDENTIALS_DIR": CREDENTIALS_DIR,
        "MAS_REPLICA_ID": {"fieldRef": {"fieldPath": "metadata.name"}},
        "MAS_CAPABILITIES": "summarize,translate",
        "MAS_ROLES": "reader",
        "MAS_MAX_ATTEMPTS": "7",
        "MAS_LEASE_MS": "45000",
        "MAS_METRICS_ADDRESS": "0.0.0.0:9090",
        "MAS_A2A_REMOTES_DIR": "/var/run/mas/a2a-remotes",
    }
    assert "secretKeyRef" not in repr(sidecar)  # no secret in its environment
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_sidecars_wait_for_as_many_replicas_as_the_operator_is_told() -> None:
    waiting = replace(SETTINGS, wait_replicas=2, wait_timeout_ms=500)
    sidecar = containers(build(make_agent(), settings=waiting))["mas-sidecar"]
    assert env_of(sidecar)["MAS_REDIS_WAIT_REPLICAS"] == "2"
    assert env_of(sidecar)["MAS_REDIS_WAIT_TIMEOUT_MS"] == "500"


def test_sidecars_log_as_the_operator_and_both_containers_export_spans_when_told() -> None:
    observed = replace(SETTINGS, log_format="json", otlp_endpoint="http://collector:4318")
    by_name = containers(build(make_agent(), settings=observed))
    assert env_of(by_name["mas-sidecar"])["MAS_LOG_FORMAT"] == "json"
    for name in ("mas-sidecar", "agent"):
        assert env_of(by_name[name])["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"


def test_without_a_collector_no_container_gets_otel_settings() -> None:
    by_name = containers(build(make_agent()))
    for container in by_name.values():
        assert not [e for e in container["env"] if e["name"].startswith(("OTEL_", "MAS_LOG_"))]


def test_the_agents_own_collector_setting_wins() -> None:
    observed = replace(SETTINGS, otlp_endpoint="http://collector:4318")
    agent = make_agent(env=[{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://mine:4318"}])
    env = containers(build(agent, settings=observed))["agent"]["env"]
    assert [e for e in env if e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT"] == [
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://mine:4318"}
    ]


def test_spec_sidecar_image_and_port_win() -> None:
    built = build(make_agent(sidecar={"image": "mine/sidecar:9", "port": 9100}), PERMISSIVE)
    by_name = containers(built)
    assert by_name["mas-sidecar"]["image"] == "mine/sidecar:9"
    assert by_name["mas-sidecar"]["command"][-1] == "9100"
    assert env_of(by_name["agent"])["MAS_SIDECAR_URL"] == "http://127.0.0.1:9100"


@pytest.mark.parametrize("host_network", [False, True])
def test_sidecar_probes_are_http_gets_on_its_probes_listener_on_the_pod_address(
    host_network: bool,
) -> None:
    agent = make_agent(hostNetwork=host_network, sidecar={"port": 9100, "metricsPort": 9101})
    sidecar = containers(build(agent, PERMISSIVE))["mas-sidecar"]
    # The API stays on 127.0.0.1; the probes' listener is on every address of the pod.
    assert env_of(sidecar)["MAS_METRICS_ADDRESS"] == "0.0.0.0:9101"
    assert sidecar["ports"] == [{"name": "mas-metrics", "containerPort": 9101, "protocol": "TCP"}]
    for key, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        # No host: the kubelet probes the pod's address, with or without hostNetwork.
        assert sidecar[key]["httpGet"] == {"path": path, "port": 9101, "scheme": "HTTP"}
        assert "exec" not in sidecar[key]


def test_the_probes_listener_is_on_port_9090_unless_the_spec_says_otherwise() -> None:
    sidecar = containers(build(make_agent()))["mas-sidecar"]
    assert env_of(sidecar)["MAS_METRICS_ADDRESS"] == "0.0.0.0:9090"
    assert sidecar["readinessProbe"]["httpGet"]["port"] == 9090


def test_the_probes_listener_and_the_api_cannot_share_a_port() -> None:
    with pytest.raises(ValidationError, match="metricsPort and port must differ"):
        make_agent(sidecar={"port": 9100, "metricsPort": 9100})


def test_host_network_settings() -> None:
    agent = make_agent(
        hostNetwork=True,
        hostAliases=[{"ip": "10.0.0.5", "hostnames": ["llm.internal"]}],
    )
    built = build(agent, PERMISSIVE)
    pod = built["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["hostAliases"] == [{"ip": "10.0.0.5", "hostnames": ["llm.internal"]}]
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


LLM_KEY = {"secretKeyRef": {"name": "openai", "key": "api-key"}}
POD_SETTINGS: dict[str, Any] = {
    "env": [
        {"name": "MODE", "value": "fast"},
        {"name": "OPENAI_API_KEY", "valueFrom": LLM_KEY},
        {"name": "MODEL", "valueFrom": {"configMapKeyRef": {"name": "llm", "key": "model"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ],
    "envFrom": [{"secretRef": {"name": "tools", "optional": True}, "prefix": "TOOL_"}],
    "imagePullSecrets": [{"name": "registry"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"mas.dev/agent": "worker"}},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    },
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"mas.dev/agent": "worker"}},
        }
    ],
    "podAnnotations": {"example.com/team": "blue"},
    "podLabels": {"team": "blue"},
    "priorityClassName": "agents",
}


def test_pod_settings_users_expect_reach_the_pod() -> None:
    built = build(make_agent(**POD_SETTINGS))
    template = built["spec"]["template"]
    pod = template["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["affinity"] == POD_SETTINGS["affinity"]
    assert pod["topologySpreadConstraints"] == POD_SETTINGS["topologySpreadConstraints"]
    assert pod["priorityClassName"] == "agents"
    assert template["metadata"]["labels"]["team"] == "blue"
    assert template["metadata"]["labels"]["mas.dev/agent"] == "worker"
    assert template["metadata"]["annotations"]["example.com/team"] == "blue"
    assert "mas.dev/spec-hash" in template["metadata"]["annotations"]
    assert "team" not in built["metadata"]["labels"]  # the pods', not the Deployment's
    agent = containers(built)["agent"]
    assert env_of(agent)["OPENAI_API_KEY"] == LLM_KEY
    assert env_of(agent)["MODEL"] == {"configMapKeyRef": {"name": "llm", "key": "model"}}
    assert env_of(agent)["POD"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert agent["envFrom"] == [
        {"prefix": "TOOL_", "secretRef": {"name": "tools", "optional": True}}
    ]


def test_secrets_the_spec_references_reach_the_agent_container_only() -> None:
    built = build(make_agent(**POD_SETTINGS))
    sidecar = containers(built)["mas-sidecar"]
    assert "envFrom" not in sidecar
    assert not {"OPENAI_API_KEY", "MODEL", "POD", "MODE"} & set(env_of(sidecar))
    assert "openai" not in repr(sidecar) and "tools" not in repr(sidecar)
    # The control plane's variables come after envFrom's keys and win over them.
    names = [e["name"] for e in containers(built)["agent"]["env"]]
    assert names[-3:] == ["MAS_SIDECAR_URL", "MAS_AGENT_ID", "MAS_SIDECAR_TOKEN"]


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
        securityContext={"runAsUser": 1000, "fsGroup": 2000, "readOnlyRootFilesystem": False},
        **POD_SETTINGS,
    )
    exposed = make_agent(a2a=A2A)
    for built in (
        build(agent, PERMISSIVE),
        build(make_agent()),
        build(exposed),
        a2a_service(agent=exposed, owner_uid=UID),
        credentials_secret(agent=agent, owner_uid=UID, files=files()),
    ):
        kubernetes_validate.validate(built, version, strict=True)


# -- pod security -------------------------------------------------------------------------------


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What in a pod spec breaks Kubernetes' restricted Pod Security Standard (the policies of
    https://kubernetes.io/docs/concepts/security/pod-security-standards/, as a pod sees them)."""
    found = []
    pod_context = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.append(field)
    for volume in pod.get("volumes") or ():
        found += [f"volume {kind}" for kind in set(volume) - {"name", *RESTRICTED_VOLUME_TYPES}]
    if pod_context.get("runAsUser") == 0:
        found.append("pod runAsUser 0")
    for container in pod["containers"]:
        context = container.get("securityContext") or {}
        name = container["name"]
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation")
        if (context.get("capabilities") or {}).get("drop") != ["ALL"]:
            found.append(f"{name}: capabilities not dropped")
        if (context.get("capabilities") or {}).get("add"):
            found.append(f"{name}: capabilities added")
        if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile")) or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile")
        if any(port.get("hostPort") for port in container.get("ports") or ()):
            found.append(f"{name}: hostPort")
    return found


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    for agent in (
        make_agent(),
        make_agent(
            serviceAccountName="worker-sa",
            volumes=[
                {"name": "data", "emptyDir": {}},
                {"name": "config", "configMap": {"name": "worker-config"}},
                {"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
            ],
            volumeMounts=[{"name": "data", "mountPath": "/data"}],
            securityContext={"runAsUser": 1000, "runAsGroup": 0, "readOnlyRootFilesystem": False},
        ),
    ):
        pod = build(agent)["spec"]["template"]["spec"]
        assert restricted_violations(pod) == []


def test_the_agent_runs_as_65532_with_a_read_only_root_by_default() -> None:
    built = build(make_agent())
    assert built["spec"]["template"]["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert containers(built)["agent"]["securityContext"] == {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_spec_security_context_sets_user_groups_and_a_writable_root() -> None:
    context = {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000}
    built = build(make_agent(securityContext={**context, "readOnlyRootFilesystem": False}))
    pod_context = built["spec"]["template"]["spec"]["securityContext"]
    assert pod_context.items() >= {**context, "runAsNonRoot": True}.items()
    agent_context = containers(built)["agent"]["securityContext"]
    assert agent_context["readOnlyRootFilesystem"] is False
    assert agent_context["allowPrivilegeEscalation"] is False
    # The sidecar keeps its own user and read-only root, whatever the agent's are.
    sidecar_context = containers(built)["mas-sidecar"]["securityContext"]
    assert (sidecar_context["runAsUser"], sidecar_context["runAsGroup"]) == (65532, 65532)
    assert sidecar_context["readOnlyRootFilesystem"] is True
    assert sidecar_context["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize(
    "context",
    [
        {"runAsUser": 0},
        {"runAsGroup": -1},
        {"privileged": True},
        {"capabilities": {"add": ["ALL"]}},
    ],
    ids=["root", "negative group", "privileged", "capabilities"],
)
def test_a_less_restricted_security_context_cannot_be_written(context: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="securityContext"):
        make_agent(securityContext=context)


CREDENTIALS = {"name": "loot", "secret": {"secretName": "other-mas-credentials"}}
LOOT_MOUNT = [{"name": "loot", "mountPath": "/loot"}]
SECRET_KEY_REF = {"name": "other-mas-credentials", "key": "redis-url"}
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "another agent's credentials": (
        {"volumes": [CREDENTIALS], "volumeMounts": LOOT_MOUNT},
        "spec.volumes[0] (loot): Secret other-mas-credentials holds an agent's credentials",
    ),
    "its own credentials": (
        {"volumes": [{"name": "own", "secret": {"secretName": "worker-mas-credentials"}}]},
        "Secret worker-mas-credentials holds an agent's credentials",
    ),
    "credentials in a projected volume": (
        {
            "volumes": [
                {
                    "name": "mix",
                    "projected": {
                        "sources": [
                            {"downwardAPI": {"items": []}},
                            {"secret": {"name": "other-mas-credentials"}},
                        ]
                    },
                }
            ]
        },
        "spec.volumes[0] (mix): Secret other-mas-credentials",
    ),
    "credentials handed to a CSI driver": (
        {
            "volumes": [
                {
                    "name": "csi",
                    "csi": {
                        "driver": "x.example",
                        "nodePublishSecretRef": {"name": "other-mas-credentials"},
                    },
                }
            ]
        },
        "spec.volumes[0] (csi): Secret other-mas-credentials",
    ),
    "hostPath": (
        {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
        "spec.volumes[0] (root): hostPath volumes expose the node's filesystem",
    ),
    "an nfs volume": (
        {"volumes": [{"name": "share", "nfs": {"server": "10.0.0.9", "path": "/"}}]},
        "spec.volumes[0] (share): nfs volumes are refused",
    ),
    "the sidecar's volume name": (
        {"volumes": [{"name": "mas-credentials", "emptyDir": {}}]},
        "spec.volumes[0]: the name mas-credentials is reserved",
    ),
    "a mount of the sidecar's credentials volume": (
        {"volumeMounts": [{"name": "mas-credentials", "mountPath": "/creds"}]},
        "spec.volumeMounts[0]: mounts the sidecar's credentials volume 'mas-credentials'",
    ),
    "the host network": ({"hostNetwork": True}, "spec.hostNetwork"),
    "another agent's Redis password as a variable": (
        {"env": [{"name": "LOOT", "valueFrom": {"secretKeyRef": SECRET_KEY_REF}}]},
        "spec.env[0] (LOOT).valueFrom.secretKeyRef: Secret other-mas-credentials holds an "
        "agent's credentials, which only its sidecar may receive",
    ),
    "its own key as a variable": (
        {
            "env": [
                {"name": "MODE", "value": "fast"},
                {
                    "name": "KEY",
                    "valueFrom": {
                        "secretKeyRef": {"name": "worker-mas-credentials", "key": "agent.key"}
                    },
                },
            ]
        },
        "spec.env[1] (KEY).valueFrom.secretKeyRef: Secret worker-mas-credentials",
    ),
    "every key of another agent's credentials": (
        {"envFrom": [{"secretRef": {"name": "other-mas-credentials"}, "prefix": "X_"}]},
        "spec.envFrom[0].secretRef: Secret other-mas-credentials holds an agent's credentials",
    ),
    "credentials as an image pull secret": (
        {"imagePullSecrets": [{"name": "other-mas-credentials"}]},
        "spec.imagePullSecrets[0]: Secret other-mas-credentials",
    ),
    "another agent's label on its pods": (
        {"podLabels": {"mas.dev/agent": "doctor"}},
        "spec.podLabels: mas.dev/agent is set by the operator",
    ),
    "the operator's app label on its pods": (
        {"podLabels": {"app.kubernetes.io/name": "other"}},
        "spec.podLabels: app.kubernetes.io/name is set by the operator",
    ),
    "an unconfined AppArmor profile": (
        {"podAnnotations": {"container.apparmor.security.beta.kubernetes.io/agent": "unconfined"}},
        "spec.podAnnotations: container.apparmor.security.beta.kubernetes.io/agent is reserved",
    ),
    "an unconfined seccomp profile": (
        {"podAnnotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}},
        "spec.podAnnotations: seccomp.security.alpha.kubernetes.io/pod is reserved",
    ),
    "the operator's spec hash": (
        {"podAnnotations": {"mas.dev/spec-hash": "0"}},
        "spec.podAnnotations: mas.dev/spec-hash is reserved",
    ),
    "a system priority": (
        {"priorityClassName": "system-node-critical"},
        "spec.priorityClassName: system-node-critical is for the cluster's own components",
    ),
    "another sidecar image": (
        {"sidecar": {"image": "mine/sidecar:9"}},
        "spec.sidecar.image: 'mine/sidecar:9' is not the operator's sidecar image",
    ),
}


@pytest.mark.parametrize(("spec", "words"), list(REFUSED.values()), ids=list(REFUSED))
def test_what_an_agent_may_not_ask_for(spec: dict[str, Any], words: str) -> None:
    agent = make_agent(**spec)
    found = refusals(agent, SETTINGS)
    assert len(found) == 1 and words in found[0], found
    with pytest.raises(PodRefused) as refused:
        build(agent)
    assert refused.value.reasons == tuple(found)


def test_every_refusal_is_listed() -> None:
    agent = make_agent(
        volumes=[CREDENTIALS, {"name": "root", "hostPath": {"path": "/"}}],
        volumeMounts=[*LOOT_MOUNT, {"name": "mas-credentials", "mountPath": "/creds"}],
        hostNetwork=True,
    )
    found = refusals(agent, SETTINGS)
    assert [reason.split(":")[0] for reason in found] == [
        "spec.volumes[0] (loot)",
        "spec.volumes[1] (root)",
        "spec.volumeMounts[1]",
        "spec.hostNetwork",
    ]


def test_the_settings_can_allow_the_node_and_another_sidecar_but_never_credentials() -> None:
    agent = make_agent(
        hostNetwork=True,
        volumes=[{"name": "models", "hostPath": {"path": "/srv/models"}}],
        volumeMounts=[{"name": "models", "mountPath": "/models"}],
        sidecar={"image": "mine/sidecar:9"},
    )
    assert len(refusals(agent, SETTINGS)) == 3
    assert refusals(agent, PERMISSIVE) == []
    for setting, field in (
        ("allow_host_network", "spec.hostNetwork"),
        ("allow_host_path", "spec.volumes[0]"),
        ("allow_sidecar_image", "spec.sidecar.image"),
    ):
        others = [r for r in refusals(agent, replace(SETTINGS, **{setting: True}))]
        assert len(others) == 2 and not any(r.startswith(field) for r in others)
    stolen = make_agent(volumes=[CREDENTIALS], volumeMounts=LOOT_MOUNT)
    assert refusals(stolen, PERMISSIVE) != []
    assert refusals(make_agent(sidecar={"image": SIDECAR_IMAGE}), SETTINGS) == []


def test_the_operator_namespace_keeps_its_service_account_and_secrets() -> None:
    namespace = SETTINGS.operator_namespace
    own_account = make_agent(namespace, serviceAccountName=SETTINGS.operator_service_account)
    (reason,) = refusals(own_account, SETTINGS)
    assert reason.startswith("spec.serviceAccountName: mas-operator is the operator's own")
    anchor = make_agent(
        namespace, volumes=[{"name": "anchor", "secret": {"secretName": "mas-trust-anchor"}}]
    )
    (reason,) = refusals(anchor, SETTINGS)
    assert "Secret mas-trust-anchor is in the operator's namespace" in reason
    signing_key = {"secretKeyRef": {"name": "mas-trust-anchor", "key": "anchor.key"}}
    by_reference = make_agent(
        namespace,
        env=[{"name": "K", "valueFrom": signing_key}],
        envFrom=[{"secretRef": {"name": "mas-redis"}}],
        imagePullSecrets=[{"name": "registry"}],
    )
    assert [reason.split(":")[0] for reason in refusals(by_reference, SETTINGS)] == [
        "spec.env[0] (K).valueFrom.secretKeyRef",
        "spec.envFrom[0].secretRef",
        "spec.imagePullSecrets[0]",
    ]
    assert all("in the operator's namespace" in r for r in refusals(by_reference, SETTINGS))
    # Elsewhere these names are other namespaces' own objects.
    assert refusals(make_agent(serviceAccountName="mas-operator"), SETTINGS) == []
    elsewhere = make_agent(volumes=[{"name": "a", "secret": {"secretName": "mas-trust-anchor"}}])
    assert refusals(elsewhere, SETTINGS) == []
    assert refusals(make_agent(env=[{"name": "K", "valueFrom": signing_key}]), SETTINGS) == []


def test_ordinary_volumes_are_accepted() -> None:
    agent = make_agent(
        volumes=[
            {"name": "scratch"},  # no type: the API server makes it an emptyDir
            {"name": "tmp", "emptyDir": {"medium": "Memory"}},
            {"name": "api-key", "secret": {"secretName": "openai-api-key"}},
            {"name": "code", "configMap": {"name": "code"}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "models"}},
            {"name": "csi", "csi": {"driver": "x.example", "nodePublishSecretRef": {"name": "k"}}},
            {
                "name": "all",
                "projected": {
                    "sources": [
                        {"secret": {"name": "openai-api-key"}},
                        {"serviceAccountToken": {"path": "token", "audience": "llm"}},
                    ]
                },
            },
        ],
        volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}, {"name": "code", "mountPath": "/app"}],
    )
    assert refusals(agent, SETTINGS) == []


# -- A2A ----------------------------------------------------------------------------------------


def test_an_exposed_agents_sidecar_listens_on_its_a2a_port_with_its_clients_keys() -> None:
    built = build(make_agent(a2a=A2A))
    sidecar, agent = containers(built)["mas-sidecar"], containers(built)["agent"]
    env = env_of(sidecar)
    assert env["MAS_A2A_HOST"] == "0.0.0.0"
    assert env["MAS_A2A_URL"] == "http://worker-a2a.team.svc:8791/"
    assert env["MAS_A2A_CLIENTS_DIR"] == "/var/run/mas/a2a-clients"
    assert '"expose":true' in env["MAS_A2A"]
    assert sidecar["ports"] == [
        {"name": "mas-metrics", "containerPort": 9090, "protocol": "TCP"},
        {"name": "a2a", "containerPort": 8791, "protocol": "TCP"},
    ]
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts["mas-a2a-clients"] == {
        "name": "mas-a2a-clients", "mountPath": "/var/run/mas/a2a-clients", "readOnly": True
    }  # fmt: skip
    # The keys reach the sidecar only, one file per client named after it.
    assert "mas-a2a-clients" not in {m["name"] for m in agent.get("volumeMounts", [])}
    assert not any(name.startswith("MAS_A2A") for name in env_of(agent))
    volumes = {v["name"]: v for v in built["spec"]["template"]["spec"]["volumes"]}
    assert volumes["mas-a2a-clients"]["projected"]["sources"] == [
        {"secret": {"name": "a2a-keys", "items": [{"key": "partner-key", "path": "partner"}],
                    "optional": False}},
        {"secret": {"name": "other-keys", "items": [{"key": "k", "path": "other"}],
                    "optional": True}},
    ]  # fmt: skip


def test_an_agent_with_a_card_but_not_exposed_gets_its_card_settings_only() -> None:
    built = build(make_agent(a2a={**A2A, "expose": False}))
    sidecar = containers(built)["mas-sidecar"]
    inbound = [name for name in env_of(sidecar) if name.startswith("MAS_A2A")]
    assert inbound == ["MAS_A2A_REMOTES_DIR", "MAS_A2A"]  # outbound tokens, the card
    assert [p["name"] for p in sidecar["ports"]] == ["mas-metrics"]
    volumes = built["spec"]["template"]["spec"]["volumes"]
    assert "mas-a2a-clients" not in {volume["name"] for volume in volumes}
    assert "MAS_A2A" not in env_of(containers(build(make_agent()))["mas-sidecar"])


def test_an_a2a_client_key_may_not_come_from_an_agents_credentials() -> None:
    clients = [{"name": "thief", "secretKeyRef": {"name": "other-mas-credentials", "key": "token"}}]
    agent = make_agent(a2a={**A2A, "clients": clients})
    assert refusals(agent, SETTINGS) == [
        "spec.a2a.clients[0] (thief).secretKeyRef: Secret other-mas-credentials holds an "
        "agent's credentials, which only its sidecar may receive"
    ]


def test_the_a2a_service_selects_the_agents_pods_with_client_affinity() -> None:
    service = a2a_service(agent=make_agent(a2a=A2A), owner_uid=UID)
    assert service["metadata"]["name"] == "worker-a2a"
    assert service["metadata"]["ownerReferences"][0]["uid"] == UID
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "mas-agent", "mas.dev/agent": "worker"
    }  # fmt: skip
    assert service["spec"]["sessionAffinity"] == "ClientIP"
