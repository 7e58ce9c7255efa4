"""The Helm chart ``helm/mas``: lint, render, values schema and Kubernetes schema validation.

Uses the real Helm engine through ``helm_python`` (offline, as ``helm template`` renders for
GitOps) and ``kubernetes-validate`` for the rendered objects: what an install creates, the
bootstrap hook that makes the trust anchor and the Redis password in the cluster, and renders
that are the same every time. Installing the chart into a cluster is the end-to-end suite's job.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from mas_core import sentinel
from mas_operator import config as operator_config
from mas_operator.builders import AGENT_LABEL, METRICS_PORT_NAME
from tests.monitoring import EVERYTHING_ON, alert_rules, dashboard

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "mas"
NAMESPACE = "mas-system"
RECENT_KUBERNETES = "v1.35.0"
HOST_NETWORK = {
    "hostNetwork": True,
    "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["kubernetes.default.svc"]}],
}
EXTERNAL = {
    "redis": {
        "external": {
            "url": "rediss://redis.example.test:6380/0",
            "username": "mas-admin",
            "existingSecret": "redis-admin",
            "passwordKey": "admin-password",
        }
    }
}
SENTINEL = {"redis": {"sentinel": {"enabled": True}}}
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "sentinel": SENTINEL,
    "host-network": HOST_NETWORK,
    "external-redis": EXTERNAL,
    "watch-namespaces": {"watchNamespaces": ["a", "b"]},
    "no-persistence": {"redis": {"embedded": {"persistence": {"enabled": False}}}},
    "audit-archive": {
        "operator": {"audit": {"archive": {"enabled": True, "storageClass": "fast"}}}
    },
    "dashboard": {"dashboard": {"enabled": True}},
    "everything-set": {
        **HOST_NETWORK,
        "agents": {"allowHostNetwork": True, "allowHostPath": True, "allowSidecarImage": True},
        "imagePullSecrets": ["registry"],
        "image": {"repository": "registry.example.test/mas", "tag": "1.2.3"},
        "dashboard": {
            "enabled": True,
            "port": 9700,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "operator": {
            "replicas": 2,
            "extraEnv": [{"name": "EXTRA", "value": "1"}],
            "podAnnotations": {"a": "b"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
            "resources": {"limits": {"cpu": "1"}},
        },
        "redis": {
            "embedded": {
                "existingSecret": "my-redis",
                "image": {"repository": "valkey/valkey", "tag": "8.1"},
                "command": ["/bin/sh", "-c"],
                "args": ["exec valkey-server -"],
                "nodeSelector": {"kubernetes.io/os": "linux"},
            }
        },
    },
}
Manifest = dict[str, Any]
HOOK = "helm.sh/hook"


@pytest.fixture(scope="module")
def chart() -> Any:
    return helm.Chart.load(str(CHART))


def render(
    chart: Any, values: dict[str, Any], *, name: str = "mas", hooks: bool = False
) -> list[Manifest]:
    """The objects of the release an install of ``values`` creates (templates only, CRDs
    aside), and with ``hooks`` the hook objects Helm runs before them too."""
    rendered = chart.render(values, name=name, namespace=NAMESPACE, is_install=True)
    objects: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return [o for o in objects if hooks or HOOK not in (o["metadata"].get("annotations") or {})]


def hook_objects(chart: Any, values: dict[str, Any]) -> dict[str, Manifest]:
    """``kind`` -> the bootstrap hook's object of that kind."""
    hooks = [
        o for o in render(chart, values, hooks=True) if HOOK in o["metadata"].get("annotations", {})
    ]
    found = {o["kind"]: o for o in hooks}
    assert len(found) == len(hooks), "one hook object of each kind"
    return found


def only(objects: list[Manifest], kind: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def container(objects: list[Manifest], kind: str) -> Manifest:
    containers = only(objects, kind)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(spec: Manifest) -> dict[str, Manifest]:
    return {entry["name"]: entry for entry in spec.get("env", [])}


def env_values(spec: Manifest) -> dict[str, str]:
    return {name: entry["value"] for name, entry in env_of(spec).items() if "value" in entry}


# -- the chart as files ------------------------------------------------------------------------


def test_chart_crds_are_byte_identical_copies_of_the_project_crds() -> None:
    project = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    copies = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert sorted(copies) == sorted(project)
    for name, data in project.items():
        assert copies[name] == data, f"helm/mas/crds/{name} differs from crds/{name}: copy it"


@pytest.mark.parametrize("kube_version", ["v1.20.0", RECENT_KUBERNETES])
def test_chart_lints_cleanly_in_strict_mode(kube_version: str) -> None:
    report = helm.lint(str(CHART), strict=True, kube_version=kube_version, namespace=NAMESPACE)
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


def test_chart_declares_kubernetes_1_20_or_later(chart: Any) -> None:
    # helm install refuses older clusters; lint and offline render do not check kubeVersion.
    assert chart.metadata["kubeVersion"] == ">=1.20.0-0"
    assert chart.metadata["apiVersion"] == "v2"
    assert chart.metadata["appVersion"] == "0.1.0"


def _leaves(values: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def test_every_value_is_listed_in_the_readme_table() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    table = set(re.findall(r"^\| `([^`]+)` \|", (CHART / "README.md").read_text(), re.M))
    leaves = set(_leaves(defaults))
    assert leaves - table == set(), "values missing from the README table"
    assert table - leaves == set(), "README table rows that are not values"


def test_every_key_of_values_yaml_has_a_comment_above_it() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = [
        line.strip()
        for above, line in itertools.pairwise(lines)
        if re.match(r"^\s*[A-Za-z][A-Za-z0-9]*:", line) and not above.strip().startswith("#")
    ]
    assert undocumented == []


def test_schema_is_strict_at_every_object_level(chart: Any) -> None:
    def walk(node: Any, where: str) -> Iterator[str]:
        if isinstance(node, dict):
            strict = node.get("additionalProperties") is False
            if node.get("type") == "object" and "properties" in node and not strict:
                yield where
            for key, value in node.items():
                yield from walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, f"{where}/{index}")

    assert chart.schema is not None
    assert list(walk(chart.schema, "")) == []
    chart.validate_schema(yaml.safe_load((CHART / "values.yaml").read_text()))


# -- values the schema refuses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "where", "message"),
    [
        ({"replicas": 2}, "", "additional properties 'replicas' not allowed"),
        ({"operator": {"replica": 2}}, "/operator", "additional properties 'replica' not allowed"),
        (
            {"redis": {"embedded": {"persistence": {"enabled": "yes"}}}},
            "/redis/embedded/persistence/enabled",
            "want boolean",
        ),
        ({"operator": {"replicas": "2"}}, "/operator/replicas", "want integer"),
        ({"operator": {"replicas": 0}}, "/operator/replicas", "minimum"),
        ({"operator": {"logLevel": "TRACE"}}, "/operator/logLevel", "value must be one of"),
        ({"operator": {"logFormat": "xml"}}, "/operator/logFormat", "value must be one of"),
        (
            {"operator": {"otlpEndpoint": "https://user:pw@collector:4318"}},
            "/operator/otlpEndpoint",
            "does not match pattern",
        ),
        (
            {"operator": {"otlpEndpoint": "collector:4318"}},
            "/operator/otlpEndpoint",
            "does not match pattern",
        ),
        ({"hostNetwork": "true"}, "/hostNetwork", "want boolean"),
        ({"watchNamespaces": "a,b"}, "/watchNamespaces", "want array"),
        ({"redis": {"port": 70000}}, "/redis/port", "maximum"),
        (
            {"redis": {"external": {"url": "http://redis:6379"}}},
            "/redis/external/url",
            "does not match pattern",
        ),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "value must be one of"),
        ({"operator": {"tokenTTLSeconds": 10}}, "/operator/tokenTTLSeconds", "minimum"),
    ],
)
def test_install_with_invalid_values_fails_naming_the_value(
    chart: Any, values: dict[str, Any], where: str, message: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name="mas", namespace=NAMESPACE, is_install=True)
    assert f"- at '{where}': " in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"redis": {"external": {"url": "redis://admin:hunter2@redis:6379"}}},
            "must not contain a password",
        ),
        ({"redis": {"agentUrl": "redis://u:p@redis:6379"}}, "does not match pattern"),
        ({"operator": {"standalone": True, "replicas": 2}}, "operator.standalone"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
        ({**HOST_NETWORK, **SENTINEL}, "redis.sentinel.enabled needs a pod network"),
        (
            {"redis": {"sentinel": {"enabled": True, "quorum": 4}}},
            "quorum must not exceed redis.sentinel.sentinels",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(
    chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError) as caught:
        render(chart, values)
    assert message in str(caught.value)


# -- what an install creates --------------------------------------------------------------------


def test_default_install_runs_the_operator_with_an_embedded_redis(chart: Any) -> None:
    objects = render(chart, {})
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
    assert kinds == [
        "ClusterKopfPeering/mas",
        "ClusterRole/mas-operator",
        "ClusterRoleBinding/mas-operator",
        "ConfigMap/mas-gateway-policy",
        "Deployment/mas-operator",
        "Role/mas-operator",
        "RoleBinding/mas-operator",
        "Service/mas-redis",
        "ServiceAccount/mas-operator",
        "StatefulSet/mas-redis",
    ]
    assert sorted(f"{k}/{o['metadata']['name']}" for k, o in hook_objects(chart, {}).items()) == [
        "Job/mas-bootstrap",
        "Role/mas-bootstrap",
        "RoleBinding/mas-bootstrap",
        "ServiceAccount/mas-bootstrap",
    ]
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mas-operator"
    assert "hostNetwork" not in pod
    operator = container(objects, "Deployment")
    assert operator["image"] == "mas:0.1.0"
    assert operator["imagePullPolicy"] == "IfNotPresent"
    assert operator["command"] == ["mas-operator"]
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert operator["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }
    statefulset = only(objects, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 1
    redis = container(objects, "StatefulSet")
    assert redis["image"] == "mas:0.1.0"
    assert redis["command"] == ["mas", "redis-server"]
    assert redis["args"] == [
        *("--port", "6379", "--bind", "0.0.0.0", "--dir", "/data"),
        *("--appendonly", "yes", "--appendfsync", "everysec", "--acl-file", "/data/users.acl"),
    ]
    service = only(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    assert (
        statefulset["spec"]["template"]["metadata"]["labels"].items()
        >= service["spec"]["selector"].items()
    )


def test_operator_environment_covers_every_setting_of_the_operator_config(chart: Any) -> None:
    documented = set(re.findall(r"^(MAS_[A-Z_]+)\s", operator_config.__doc__ or "", re.M))
    assert len(documented) >= 16
    operator = container(render(chart, EXTERNAL), "Deployment")
    assert set(env_of(operator)) == documented | {"POD_ID"}
    assert env_of(operator)["MAS_OPERATOR_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    # kopf names the replica in peering by POD_ID (the image's uid has no user name).
    assert env_of(operator)["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The account the operator runs as, whatever it is named: no Agent may run as it.
    assert env_of(operator)["MAS_OPERATOR_SERVICE_ACCOUNT"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "spec.serviceAccountName"}
    }


def test_operator_config_accepts_the_rendered_environment(chart: Any) -> None:
    for values in (
        {},
        HOST_NETWORK,
        EXTERNAL,
        {"watchNamespaces": ["a", "b"]},
        {"operator": {"statusIntervalSeconds": 0.5}},
        {"operator": {"audit": {"checkpointSeconds": 5, "archive": {"enabled": True}}}},
    ):
        env = env_values(container(render(chart, values), "Deployment"))
        settings = operator_config.OperatorConfig.from_env(
            env | {"MAS_OPERATOR_NAMESPACE": NAMESPACE, "MAS_REDIS_PASSWORD": "secret"}
        )
        assert settings.operator_namespace == NAMESPACE
        assert ":secret@" in settings.redis_url
        assert "secret" not in settings.agent_redis_url


def test_default_settings_map_to_the_operator_defaults(chart: Any) -> None:
    env = env_values(container(render(chart, {}), "Deployment"))
    assert env == {
        "MAS_REDIS_URL": "redis://mas-redis.mas-system.svc:6379",
        "MAS_AGENT_REDIS_URL": "redis://mas-redis.mas-system.svc:6379",
        "MAS_SIDECAR_IMAGE": "mas:0.1.0",
        "MAS_REDIS_WAIT_REPLICAS": "0",
        "MAS_REDIS_WAIT_TIMEOUT_MS": "1000",
        "MAS_WATCH_NAMESPACES": "",
        "MAS_ANCHOR_SECRET": "mas-trust-anchor",
        "MAS_POLICY_CONFIGMAP": "mas-gateway-policy",
        "MAS_TOKEN_TTL_SECONDS": "3600",
        "MAS_STATUS_INTERVAL_SECONDS": "10",
        "MAS_RETRY_SECONDS": "10",
        "MAS_HEALTH_PORT": "8080",
        "MAS_METRICS_PORT": "9090",
        "MAS_PEERING_NAME": "mas",
        "MAS_STANDALONE": "false",
        "MAS_LOG_LEVEL": "INFO",
        "MAS_LOG_FORMAT": "text",
        "MAS_OTLP_ENDPOINT": "",
        "MAS_ALLOW_HOST_NETWORK": "false",
        "MAS_ALLOW_HOST_PATH": "false",
        "MAS_ALLOW_SIDECAR_IMAGE": "false",
        "MAS_AUDIT_CHECKPOINT_SECONDS": "60",
        "MAS_AUDIT_ARCHIVE_DIR": "",
    }


@pytest.mark.parametrize(
    ("values", "allowed"),
    [
        ({}, set()),
        (HOST_NETWORK, {"MAS_ALLOW_HOST_NETWORK"}),
        ({"agents": {"allowHostNetwork": True}}, {"MAS_ALLOW_HOST_NETWORK"}),
        ({"agents": {"allowHostPath": True}}, {"MAS_ALLOW_HOST_PATH"}),
        ({"agents": {"allowSidecarImage": True}}, {"MAS_ALLOW_SIDECAR_IMAGE"}),
    ],
    ids=["defaults", "host-network-cluster", "host-network", "host-path", "sidecar-image"],
)
def test_agents_get_what_the_values_allow_and_a_host_network_cluster_needs(
    chart: Any, values: dict[str, Any], allowed: set[str]
) -> None:
    env = env_values(container(render(chart, values), "Deployment"))
    flags = {name for name in env if name.startswith("MAS_ALLOW_")}
    assert flags == {"MAS_ALLOW_HOST_NETWORK", "MAS_ALLOW_HOST_PATH", "MAS_ALLOW_SIDECAR_IMAGE"}
    assert {name for name in flags if env[name] == "true"} == allowed
    assert {name for name in flags if env[name] == "false"} == flags - allowed
    settings = operator_config.OperatorConfig.from_env(env)
    assert settings.allow_host_network == ("MAS_ALLOW_HOST_NETWORK" in allowed)
    assert settings.allow_host_path == ("MAS_ALLOW_HOST_PATH" in allowed)
    assert settings.allow_sidecar_image == ("MAS_ALLOW_SIDECAR_IMAGE" in allowed)


def bootstrap_args(chart: Any, values: dict[str, Any]) -> list[str]:
    job = hook_objects(chart, values)["Job"]
    (spec,) = job["spec"]["template"]["spec"]["containers"]
    assert spec["command"] == ["mas-operator", "bootstrap"]
    return list(spec["args"])


def test_the_redis_password_is_made_by_the_bootstrap_job_and_read_from_its_secret(
    chart: Any,
) -> None:
    objects = render(chart, {}, hooks=True)
    assert [o for o in objects if o["kind"] == "Secret"] == [], "no Secret in any render"
    assert bootstrap_args(chart, {}) == [
        *("--namespace", NAMESPACE, "--anchor-secret", "mas-trust-anchor"),
        *("--redis-secret", "mas-redis", "--redis-password-key", "password"),
    ]
    reference = {"secretKeyRef": {"name": "mas-redis", "key": "password"}}
    for kind in ("Deployment", "StatefulSet"):
        assert env_of(container(objects, kind))["MAS_REDIS_PASSWORD"] == {
            "name": "MAS_REDIS_PASSWORD",
            "valueFrom": reference,
        }


@pytest.mark.parametrize(
    "values",
    [{"redis": {"embedded": {"existingSecret": "mine", "passwordKey": "pw"}}}, EXTERNAL],
    ids=["existing-secret", "external-redis"],
)
def test_a_given_password_secret_leaves_the_bootstrap_only_the_anchor(
    chart: Any, values: dict[str, Any]
) -> None:
    args = bootstrap_args(chart, values)
    assert args == ["--namespace", NAMESPACE, "--anchor-secret", "mas-trust-anchor"]
    names = hook_objects(chart, values)["Role"]["rules"][1]["resourceNames"]
    assert names == ["mas-trust-anchor"]
    if values is not EXTERNAL:
        reference = {"secretKeyRef": {"name": "mine", "key": "pw"}}
        for kind in ("Deployment", "StatefulSet"):
            spec = container(render(chart, values), kind)
            assert env_of(spec)["MAS_REDIS_PASSWORD"]["valueFrom"] == reference


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_pods_run_non_root_read_only_without_capabilities(chart: Any, scenario: str) -> None:
    objects = render(chart, SCENARIOS[scenario], hooks=True)
    for workload in (o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "Job")):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for spec in pod["containers"]:
            context = spec["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["runAsNonRoot"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_sentinel_runs_a_primary_its_replicas_and_sentinels_behind_a_sentinel_url(
    chart: Any,
) -> None:
    objects = render(chart, SENTINEL)
    sets = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "StatefulSet"}
    assert {name: spec["replicas"] for name, spec in sets.items()} == {
        "mas-redis-node": 3,
        "mas-redis-sentinel": 3,
    }  # and no single embedded Redis
    services = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "Service"}
    assert {name: spec["clusterIP"] for name, spec in services.items()} == {
        "mas-redis-node": "None",
        "mas-redis-sentinel": "None",
    }
    env = env_values(container(objects, "Deployment"))
    target = sentinel.parse(env["MAS_REDIS_URL"])
    assert target.service == "mas"
    assert target.sentinels == tuple(
        (f"mas-redis-sentinel-{n}.mas-redis-sentinel.{NAMESPACE}.svc", 26379) for n in range(3)
    )
    assert env["MAS_AGENT_REDIS_URL"] == env["MAS_REDIS_URL"]
    assert env["MAS_REDIS_WAIT_REPLICAS"] == "1"
    settings = operator_config.OperatorConfig.from_env(
        env | {"MAS_OPERATOR_NAMESPACE": NAMESPACE, "MAS_REDIS_PASSWORD": "secret"}
    )
    assert sentinel.parse(settings.redis_url).password == "secret"
    assert settings.wait_replicas == 1
    commands = {"mas-redis-node": "redis-server", "mas-redis-sentinel": "redis-sentinel"}
    for name, command in commands.items():
        [spec] = sets[name]["template"]["spec"]["containers"]
        assert spec["command"] == ["mas", command]
        args = dict(zip(spec["args"][::2], spec["args"][1::2], strict=True))
        assert args["--initial-primary"] == f"mas-redis-node-0.mas-redis-node.{NAMESPACE}.svc"
        assert args["--announce"] == f"$(POD_NAME).{name}.{NAMESPACE}.svc"
        password = env_of(spec)["MAS_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert password["name"] == "mas-redis"


@pytest.mark.parametrize(
    ("values", "waits"),
    [({}, "0"), (SENTINEL, "1"), ({"redis": {"waitReplicas": 2, **SENTINEL["redis"]}}, "2")],
)
def test_sidecars_wait_for_replicas_under_sentinel_unless_told_otherwise(
    chart: Any, values: dict[str, Any], waits: str
) -> None:
    assert (
        env_values(container(render(chart, values), "Deployment"))["MAS_REDIS_WAIT_REPLICAS"]
        == waits
    )


def test_host_network_puts_pods_on_the_node_and_redis_on_loopback(chart: Any) -> None:
    objects = render(chart, {**HOST_NETWORK, "redis": {"port": 16379}}, hooks=True)
    for kind in ("Deployment", "StatefulSet", "Job"):
        pod = only(objects, kind)["spec"]["template"]["spec"]
        assert pod["hostNetwork"] is True
        assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
        assert pod["hostAliases"] == HOST_NETWORK["hostAliases"]
    operator = container(objects, "Deployment")
    env = env_values(operator)
    assert env["MAS_REDIS_URL"] == "redis://127.0.0.1:16379"
    assert env["MAS_AGENT_REDIS_URL"] == "redis://127.0.0.1:16379"
    assert operator["livenessProbe"]["httpGet"]["host"] == "127.0.0.1"
    redis = container(objects, "StatefulSet")
    assert redis["args"][:4] == ["--port", "16379", "--bind", "127.0.0.1"]
    assert redis["ports"][0]["containerPort"] == 16379
    for probe in ("readinessProbe", "livenessProbe"):
        assert redis[probe]["tcpSocket"] == {"port": "redis", "host": "127.0.0.1"}


def test_external_redis_renders_no_embedded_redis(chart: Any) -> None:
    objects = render(chart, EXTERNAL)
    assert {o["kind"] for o in objects} == {
        "ClusterKopfPeering",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    }
    operator = container(objects, "Deployment")
    env = env_of(operator)
    assert env["MAS_REDIS_URL"]["value"] == "rediss://redis.example.test:6380/0"
    assert env["MAS_AGENT_REDIS_URL"]["value"] == "rediss://redis.example.test:6380/0"
    assert env["MAS_REDIS_USERNAME"]["value"] == "mas-admin"
    assert env["MAS_REDIS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "redis-admin", "key": "admin-password"}
    }


def test_external_redis_without_secret_sets_no_password(chart: Any) -> None:
    values = {"redis": {"external": {"url": "redis://admin@redis:6379"}}}
    env = env_of(container(render(chart, values), "Deployment"))
    assert "MAS_REDIS_PASSWORD" not in env
    assert env["MAS_REDIS_URL"]["value"] == "redis://admin@redis:6379"
    assert env["MAS_AGENT_REDIS_URL"]["value"] == "redis://redis:6379", "the user is removed"


def test_agent_url_overrides_the_url_sidecars_use(chart: Any) -> None:
    values = {"redis": {"agentUrl": "redis://redis.other:6379/0"}}
    env = env_values(container(render(chart, values), "Deployment"))
    assert env["MAS_AGENT_REDIS_URL"] == "redis://redis.other:6379/0"
    assert env["MAS_REDIS_URL"] == "redis://mas-redis.mas-system.svc:6379"


def test_watch_namespaces_get_a_kopf_peering_each_and_keep_the_cluster_role(chart: Any) -> None:
    objects = render(chart, {"watchNamespaces": ["a", "b"], "operator": {"peeringName": "p"}})
    peerings = [o for o in objects if "KopfPeering" in o["kind"]]
    assert [(p["kind"], p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings] == [
        ("KopfPeering", "a", "p"),
        ("KopfPeering", "b", "p"),
    ]
    assert only(objects, "ClusterRole")["rules"] == _deploy_rbac()["ClusterRole"]["rules"]
    env = env_values(container(objects, "Deployment"))
    assert env["MAS_WATCH_NAMESPACES"] == "a,b"
    assert env["MAS_PEERING_NAME"] == "p"


def test_standalone_operator_gets_no_peering_object(chart: Any) -> None:
    objects = render(chart, {"operator": {"standalone": True}})
    assert [o for o in objects if "KopfPeering" in o["kind"]] == []
    assert env_values(container(objects, "Deployment"))["MAS_STANDALONE"] == "true"


def test_redis_is_durable_by_default_on_a_volume_claim(chart: Any) -> None:
    statefulset = only(render(chart, {}), "StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"] == {"requests": {"storage": "1Gi"}}
    assert "storageClassName" not in claim["spec"], "the cluster's default class"
    pod = statefulset["spec"]["template"]["spec"]
    assert "volumes" not in pod
    redis = pod["containers"][0]
    assert redis["args"][-6:] == [
        *("--appendonly", "yes", "--appendfsync", "everysec"),
        *("--acl-file", "/data/users.acl"),
    ]
    assert redis["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]


def test_persistence_settings_reach_the_claim_and_the_server(chart: Any) -> None:
    persistence = {"size": "5Gi", "storageClass": "fast", "appendfsync": "always"}
    values = {"redis": {"embedded": {"persistence": persistence}}}
    statefulset = only(render(chart, values), "StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"] == {"requests": {"storage": "5Gi"}}
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendfsync") + 1] == "always"


def test_without_persistence_redis_runs_on_an_empty_dir_only_when_asked(chart: Any) -> None:
    statefulset = only(render(chart, SCENARIOS["no-persistence"]), "StatefulSet")
    assert "volumeClaimTemplates" not in statefulset["spec"]
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert pod["containers"][0]["args"][-4:] == [
        *("--appendonly", "no", "--acl-file", "/data/users.acl")
    ]


def test_an_audit_archive_mounts_a_kept_claim_on_the_operator(chart: Any) -> None:
    values = {"operator": {"audit": {"archive": {"enabled": True, "size": "50Gi"}}}}
    objects = render(chart, values)
    claim = only(objects, "PersistentVolumeClaim")
    operator = only(objects, "Deployment")["spec"]["template"]["spec"]

    assert claim["metadata"]["name"] == "mas-audit-archive"
    assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert claim["spec"]["resources"] == {"requests": {"storage": "50Gi"}}
    assert {
        "name": "audit-archive",
        "persistentVolumeClaim": {"claimName": "mas-audit-archive"},
    } in (operator["volumes"])
    mount = {"name": "audit-archive", "mountPath": "/var/lib/mas/audit-archive"}
    assert mount in operator["containers"][0]["volumeMounts"]
    env = env_values(operator["containers"][0])
    assert env["MAS_AUDIT_ARCHIVE_DIR"] == "/var/lib/mas/audit-archive"
    given = {"operator": {"audit": {"archive": {"enabled": True, "existingClaim": "mine"}}}}
    objects = render(chart, given)
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    claims = [v for v in only(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]]
    assert {"name": "audit-archive", "persistentVolumeClaim": {"claimName": "mine"}} in claims


def test_image_values_set_the_operator_sidecar_and_redis_images(chart: Any) -> None:
    values = {"image": {"repository": "registry.test/mas", "tag": "dev", "pullPolicy": "Never"}}
    objects = render(chart, values)
    operator = container(objects, "Deployment")
    assert operator["image"] == "registry.test/mas:dev"
    assert operator["imagePullPolicy"] == "Never"
    assert env_values(operator)["MAS_SIDECAR_IMAGE"] == "registry.test/mas:dev"
    redis = container(objects, "StatefulSet")
    assert (redis["image"], redis["imagePullPolicy"]) == ("registry.test/mas:dev", "Never")
    values["operator"] = {"sidecarImage": "sidecar:1"}
    env = env_values(container(render(chart, values), "Deployment"))
    assert env["MAS_SIDECAR_IMAGE"] == "sidecar:1"


def test_embedded_redis_image_and_command_can_be_replaced(chart: Any) -> None:
    redis = container(render(chart, SCENARIOS["everything-set"]), "StatefulSet")
    assert redis["image"] == "valkey/valkey:8.1"
    assert redis["command"] == ["/bin/sh", "-c"]
    assert redis["args"] == ["exec valkey-server -"]
    assert redis["env"][0]["valueFrom"] == {"secretKeyRef": {"name": "my-redis", "key": "password"}}


def test_several_operator_replicas_keep_peering(chart: Any) -> None:
    objects = render(chart, {"operator": {"replicas": 3}})
    assert only(objects, "Deployment")["spec"]["replicas"] == 3
    assert only(objects, "ClusterKopfPeering")["metadata"]["name"] == "mas"
    assert env_values(container(objects, "Deployment"))["MAS_STANDALONE"] == "false"


def test_object_names_follow_the_release_name(chart: Any) -> None:
    objects = render(chart, {}, name="team", hooks=True)
    names = {o["metadata"]["name"] for o in objects if o["kind"] != "ClusterKopfPeering"}
    assert names == {
        "team-mas-operator",
        "team-mas-redis",
        "team-mas-bootstrap",
        "mas-gateway-policy",  # named by operator.policyConfigMap
    }
    job_args = only(objects, "Job")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--redis-secret team-mas-redis" in " ".join(job_args)
    env = env_values(container(objects, "Deployment"))
    assert env["MAS_REDIS_URL"] == "redis://team-mas-redis.mas-system.svc:6379"


def test_notes_tell_the_next_steps(chart: Any) -> None:
    notes = chart.render({}, name="mas", namespace=NAMESPACE, is_install=True)[
        "mas/templates/NOTES.txt"
    ]
    assert "kubectl get agents" in notes
    assert "kubectl apply -f agent.yaml" in notes
    assert "configmap mas-gateway-policy" in notes
    assert "redis://mas-redis.mas-system.svc:6379" in notes


# -- RBAC equals deploy/rbac.yaml ---------------------------------------------------------------


def _deploy_rbac() -> dict[str, Manifest]:
    docs = yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text())
    return {doc["kind"]: doc for doc in docs if doc}


def test_rendered_rbac_rules_equal_deploy_rbac(chart: Any) -> None:
    expected = _deploy_rbac()
    objects = render(chart, {})
    for kind in ("ClusterRole", "Role"):
        assert only(objects, kind)["rules"] == expected[kind]["rules"], kind
    account = only(objects, "ServiceAccount")["metadata"]["name"]
    for kind, role in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = only(objects, kind)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role,
            "name": only(objects, role)["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]
    assert only(objects, "Role")["metadata"]["namespace"] == NAMESPACE


def test_rbac_can_be_left_to_the_cluster_admin(chart: Any) -> None:
    values = {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "given"}}
    objects = render(chart, values)
    assert not {o["kind"] for o in objects} & {
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    }
    assert only(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "given"


# -- Kubernetes schemas -------------------------------------------------------------------------


def _crd_schemas(chart: Any) -> dict[tuple[str, str], Manifest]:
    """``(apiVersion, kind)`` → the openAPIV3Schema of every CRD the chart ships."""
    schemas: dict[tuple[str, str], Manifest] = {}
    for entry in chart.crds:
        for crd in yaml.safe_load_all(entry["data"]):
            if not crd:
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def _validate(manifest: Manifest, version: str) -> None:
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        first = str(exc).splitlines()[0]
        kind = f"{manifest['kind']}/{manifest['metadata']['name']}"
        raise AssertionError(f"{kind} is invalid on Kubernetes {version}: {first}") from None


@pytest.mark.parametrize("version", ["1.25.0", kubernetes_validate.latest_version()])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_rendered_object_is_valid_kubernetes(chart: Any, scenario: str, version: str) -> None:
    custom = _crd_schemas(chart)
    for manifest in render(chart, SCENARIOS[scenario], hooks=True):
        key = (manifest["apiVersion"], manifest["kind"])
        if key in custom:
            jsonschema.validate(manifest, custom[key])
        else:
            _validate(manifest, version)


@pytest.mark.parametrize("version", ["1.25.0", kubernetes_validate.latest_version()])
def test_the_chart_crds_are_valid_kubernetes(chart: Any, version: str) -> None:
    crds = [doc for entry in chart.crds for doc in yaml.safe_load_all(entry["data"]) if doc]
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "agents.mas.dev",
        "clusterkopfpeerings.kopf.dev",
        "externalagents.mas.dev",
        "gatewaypolicies.mas.dev",
        "kopfpeerings.kopf.dev",
    ]
    for crd in crds:
        _validate(crd, version)


def test_the_chart_owns_the_policy_configmap(chart: Any) -> None:
    configmap = only(render(chart, {}), "ConfigMap")
    assert configmap["metadata"]["name"] == "mas-gateway-policy"
    assert "data" not in configmap, "the operator fills it; upgrades must not reset it"


# -- a chart GitOps can own -----------------------------------------------------------------------

# Template functions whose output changes from one render to the next, or depends on the cluster.
UNSTABLE_FUNCTIONS = re.compile(
    r"\b(lookup|rand\w*|genPrivateKey|genCA\w*|genSelfSignedCert\w*|genSignedCert\w*|"
    r"uuidv4|now|date\w*|unixEpoch|htpasswd|bcrypt|encryptAES|shuffle)\b"
)


def test_no_template_uses_a_random_time_or_lookup_function() -> None:
    found = []
    for path in sorted((CHART / "templates").iterdir()):
        text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)  # comments aside
        for action in re.findall(r"\{\{(.*?)\}\}", text, flags=re.S):
            found += [f"{path.name}: {name}" for name in UNSTABLE_FUNCTIONS.findall(action)]
    assert found == []


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_render_is_byte_for_byte_the_same(chart: Any, scenario: str) -> None:
    # What `helm template | kubectl apply` gives on every GitOps sync: install and upgrade
    # renders too, so applying twice changes nothing.
    values = SCENARIOS[scenario]
    first = chart.render(values, name="mas", namespace=NAMESPACE, is_install=True)
    again = helm.Chart.load(str(CHART)).render(
        values, name="mas", namespace=NAMESPACE, is_install=True
    )
    upgrade = chart.render(values, name="mas", namespace=NAMESPACE, is_upgrade=True)
    assert first == again == upgrade


def test_the_bootstrap_hook_runs_before_the_release_with_the_least_rights(chart: Any) -> None:
    hooks = hook_objects(chart, {})
    weights = {
        kind: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for kind, o in hooks.items()
    }
    assert weights["ServiceAccount"] < weights["RoleBinding"] < weights["Job"]
    assert weights["Role"] < weights["RoleBinding"]
    for hook in hooks.values():
        annotations = hook["metadata"]["annotations"]
        assert annotations[HOOK] == "pre-install,pre-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert hook["metadata"]["namespace"] == NAMESPACE
    assert hooks["Role"]["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["mas-trust-anchor", "mas-redis"],
            "verbs": ["get", "patch"],
        },
    ]
    assert hooks["RoleBinding"]["roleRef"]["name"] == "mas-bootstrap"
    assert hooks["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "mas-bootstrap", "namespace": NAMESPACE}
    ]
    job = hooks["Job"]["spec"]
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == "mas-bootstrap"
    assert pod["restartPolicy"] == "Never"
    assert job["backoffLimit"] == 3
    assert pod["containers"][0]["image"] == "mas:0.1.0"
    # The operator's own rights gain nothing: they are those of deploy/rbac.yaml.
    assert only(render(chart, {}), "ClusterRole")["rules"] == _deploy_rbac()["ClusterRole"]["rules"]


def test_without_rbac_the_bootstrap_gets_only_its_service_account(chart: Any) -> None:
    values = {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "given"}}
    assert sorted(hook_objects(chart, values)) == ["Job", "ServiceAccount"]


# -- autoscaling an Agent, as the README documents it ---------------------------------------------


def autoscaling_manifests() -> dict[str, dict[str, Any]]:
    """The YAML blocks of the README's autoscaling section, by kind."""
    text = (CHART / "README.md").read_text()
    start = text.index("## Autoscaling an Agent on its backlog")
    section = text[start : text.index("\n## ", start + 1)]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    return {document["kind"]: document for document in map(yaml.safe_load, blocks)}


def test_the_documented_autoscalers_target_the_agents_scale_subresource() -> None:
    from mas_core.manifests import parse_agent  # noqa: PLC0415 - the Agent side of the contract
    from mas_operator.crds import agent_crd  # noqa: PLC0415
    from mas_operator.metrics import OperatorMetrics  # noqa: PLC0415

    manifests = autoscaling_manifests()
    assert set(manifests) == {"PodMonitor", "ScaledObject", "HorizontalPodAutoscaler"}
    crd = agent_crd()
    target = {"apiVersion": "mas.dev/v1alpha1", "kind": "Agent", "name": "doctor"}
    exported = {
        metric.name
        for metric in OperatorMetrics().registry.collect()
        if metric.name.startswith("mas_agent_inbox_")
    }
    assert (crd["spec"]["names"]["kind"], crd["spec"]["group"]) == ("Agent", "mas.dev")
    assert crd["spec"]["versions"][0]["subresources"]["scale"]["specReplicasPath"] == (
        ".spec.replicas"
    )

    keda = manifests["ScaledObject"]
    assert keda["apiVersion"] == "keda.sh/v1alpha1"
    assert keda["spec"]["scaleTargetRef"] == target
    (trigger,) = keda["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    # KEDA's trigger metadata is a map of strings; its replica bounds integers.
    assert all(isinstance(value, str) for value in trigger["metadata"].values())
    assert set(trigger["metadata"]) >= {"serverAddress", "query", "threshold"}
    metric = re.match(r"max\((\w+)\{(.*)\}\)$", trigger["metadata"]["query"])
    assert metric is not None and metric[1] in exported
    assert metric[2] == 'agent_namespace="mas-healthcare",agent="doctor"'
    assert keda["metadata"]["namespace"] == "mas-healthcare"  # the Agent's own namespace
    for bound in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
        assert isinstance(keda["spec"][bound], int)
    # Scaled to zero is a valid Agent (its backlog is measured without pods).
    zero = {"apiVersion": "mas.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "doctor"}}
    parse_agent({**zero, "spec": {"replicas": keda["spec"]["minReplicaCount"]}}, "test")

    hpa = manifests["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == target
    (external,) = hpa["spec"]["metrics"]
    assert external["external"]["metric"]["name"] in exported
    assert external["external"]["metric"]["selector"]["matchLabels"] == {
        "agent_namespace": "mas-healthcare",
        "agent": "doctor",
    }
    oldest, newest = all_versions()[0], all_versions()[-1]
    kubernetes_validate.validate(hpa, newest, strict=True)
    # The oldest schema kubernetes-validate knows still serves v2beta2, as 1.20 to 1.25 do.
    kubernetes_validate.validate({**hpa, "apiVersion": "autoscaling/v2beta2"}, oldest, strict=True)
    assert manifests["PodMonitor"]["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/component": "operator"
    }


# -- monitoring -----------------------------------------------------------------------------------


def test_monitoring_objects_are_off_by_default(chart: Any) -> None:
    objects = render(chart, {})
    assert not [o for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert not [o for o in objects if "grafana_dashboard" in o["metadata"].get("labels", {})]


def test_pod_monitors_scrape_the_sidecars_probes_port_and_the_operators_metrics_port(
    chart: Any,
) -> None:
    objects = render(chart, {"monitoring": {"podMonitor": {"enabled": True, "labels": {"a": "b"}}}})
    monitors = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PodMonitor"}
    agents, operator = monitors["mas-agents"], monitors["mas-operator"]
    assert agents["metadata"]["labels"]["a"] == "b"
    assert agents["spec"]["namespaceSelector"] == {"any": True}
    assert agents["spec"]["selector"]["matchExpressions"] == [
        {"key": AGENT_LABEL, "operator": "Exists"}
    ]
    [endpoint] = agents["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == (METRICS_PORT_NAME, "/metrics")
    assert endpoint["relabelings"][0]["targetLabel"] == "agent"
    deployment = only(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert operator["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    [operator_container] = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"] for p in operator_container["ports"]}
    assert operator["spec"]["podMetricsEndpoints"][0]["port"] in ports
    watched = render(
        chart, {"watchNamespaces": ["a"], "monitoring": {"podMonitor": {"enabled": True}}}
    )
    selector = next(o for o in watched if o["kind"] == "PodMonitor")["spec"]["namespaceSelector"]
    assert selector == {"matchNames": ["a"]}


def test_the_alerts_take_their_thresholds_from_the_values(chart: Any) -> None:
    values = {"prometheusRule": {"enabled": True, "for": "5m", "backlogAgeSeconds": 42}}
    rules = alert_rules(render(chart, {"monitoring": values}))
    by_name = {r["alert"]: r for r in rules}
    assert "> 42" in by_name["MasInboxBacklogGrowing"]["expr"]
    assert {r.get("for") for r in rules} == {"5m", None}
    assert by_name["MasAuditChainBroken"]["labels"]["severity"] == "critical"
    assert "for" not in by_name["MasAuditChainBroken"]
    for rule in rules:  # Prometheus' own templates survive Helm's
        assert "{{ $labels." in rule["annotations"]["summary"] or "$value" in str(rule)


def test_the_grafana_dashboard_is_a_configmap_for_the_grafana_sidecar(chart: Any) -> None:
    values = {"enabled": True, "namespace": "grafana", "annotations": {"grafana_folder": "mas"}}
    objects = render(chart, {"monitoring": {"grafanaDashboard": values}})
    board = dashboard(objects)
    [configmap] = [o for o in objects if "mas.json" in o.get("data", {})]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "grafana"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "mas"}
    assert board["uid"] == "mas-overview"
    [variable] = board["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])


@pytest.mark.parametrize("version", ["1.25.0", kubernetes_validate.latest_version()])
def test_the_dashboard_configmap_is_valid_kubernetes(chart: Any, version: str) -> None:
    [configmap] = [o for o in render(chart, EVERYTHING_ON) if "mas.json" in o.get("data", {})]
    _validate(configmap, version)


# -- the dashboard ------------------------------------------------------------------------------


def test_the_dashboard_is_off_by_default(chart: Any) -> None:
    objects = render(chart, {})

    assert not [o for o in objects if o["metadata"]["name"].endswith("-dashboard")]


def test_the_dashboard_reads_redis_as_its_own_user_behind_a_cluster_ip(chart: Any) -> None:
    objects = render(chart, SCENARIOS["dashboard"])

    deployment = next(o for o in objects if o["metadata"]["name"] == "mas-dashboard")
    pod = deployment["spec"]["template"]["spec"]
    [setup] = pod["initContainers"]
    [board] = pod["containers"]
    # Only the init container sees the administrator's password, as a file.
    assert setup["command"] == [
        "mas", "dashboard", "--setup-only", "/run/mas-dashboard/redis-url"
    ]  # fmt: skip
    assert env_values(setup)["MAS_REDIS_PASSWORD_FILE"] == "/run/mas-admin/password"
    assert {m["name"] for m in setup["volumeMounts"]} == {"run", "admin"}
    assert env_of(board) == {
        "MAS_REDIS_URL_FILE": {
            "name": "MAS_REDIS_URL_FILE",
            "value": "/run/mas-dashboard/redis-url",
        }
    }
    assert {m["name"] for m in board["volumeMounts"]} == {"run", "tmp"}
    assert "--enable-writes" not in board["command"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["run"]["emptyDir"]["medium"] == "Memory"
    assert volumes["admin"]["secret"]["secretName"] == "mas-redis"
    assert pod["automountServiceAccountToken"] is False
    service = next(
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "mas-dashboard"
    )
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 8700


def test_on_the_host_network_the_dashboard_listens_on_loopback(chart: Any) -> None:
    objects = render(chart, {**HOST_NETWORK, "dashboard": {"enabled": True}})

    deployment = next(o for o in objects if o["metadata"]["name"] == "mas-dashboard")
    [board] = deployment["spec"]["template"]["spec"]["containers"]
    assert board["command"][2:4] == ["--host", "127.0.0.1"]
