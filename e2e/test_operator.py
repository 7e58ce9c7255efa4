"""The chart, the operator and the sidecars on a real Kubernetes cluster.

``helm install`` of ``helm/mas`` (with the real Helm engine) brings up the operator and the
embedded Redis; the healthcare example's Agents and GatewayPolicy are applied with kubectl; the
tests then watch what a user would: pods with their sidecars (under the restricted Pod Security
Standard; each sidecar serving only the agent holding its token), messages delivered, a denied
message denied and audited, an SSN redacted at the receiver, a policy change in force without
restarting a pod, an invalid Agent refused by the API server, an Agent mounting another agent's
credentials refused by the operator, hand edits of an Agent's Deployment and Secret taken back
by the operator's server-side apply, an Agent's Redis user gone with it, Redis on its bound
claim keeping every accepted message, the users and the policy when its pod is replaced or its
server is SIGKILLed, a Redis without persistence provisioned again, a handler running for
three leases run once across an agent's replicas (the SDK renews its lease), an Agent scaled
through its ``scale`` subresource (``kubectl scale``, an HPA-style update), an exposed agent
answering the official A2A client and asking an ``ExternalAgent`` (an ``a2a-sdk`` server) with
the token the operator gives its sidecar, and ``helm
upgrade``, ``rollback`` and ``uninstall`` leaving nothing behind but the trust anchor, the Redis
password and the Redis data, which go when deleted as the chart's README says.

Redis is inspected from inside the Redis pod (``kubectl exec``), so the same tests run on the
local host-network cluster and on kind. The tests of this module share one release and run in
file order; the last one uninstalls it. Run by ``python -m pytest e2e``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from e2e.kube import E2ECluster, HostVolumes
from e2e.util import HarnessError
from mas_cli.local.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "mas"
EXAMPLE = ROOT / "examples" / "healthcare" / "k8s"
RELEASE = "mas"
RELEASE_NAMESPACE = "mas-system"
REDIS_CLAIM = f"data-{RELEASE}-redis-0"
KEPT_SECRETS = ("mas-trust-anchor", f"{RELEASE}-redis")
CRDS = (
    "agents.mas.dev",
    "gatewaypolicies.mas.dev",
    "externalagents.mas.dev",
    "clusterkopfpeerings.kopf.dev",
    "kopfpeerings.kopf.dev",
)
FINISHED = "consultation finished: 3 answered, 1 blocked by DLP, 1 denied"


def wait_until(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (HarnessError, KeyError, LookupError):
            last = None
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")


def condition(obj: dict[str, Any], type: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type:
            return dict(cond)
    return {}


@dataclass
class Release:
    """The installed chart: its Helm client, values and ways into its Redis."""

    cluster: E2ECluster
    helm: Any
    values: dict[str, Any]
    name: str = RELEASE
    namespace: str = RELEASE_NAMESPACE

    @property
    def redis_port(self) -> int:
        return int(self.values["redis"]["port"])

    def in_redis_pod(self, script: str) -> str:
        """Run a shell ``script`` in the Redis pod; ``$REDIS_URL`` is the admin URL."""
        url = f'redis://:"$MAS_REDIS_PASSWORD"@127.0.0.1:{self.redis_port}'
        return self.cluster.kubectl(
            "exec", "-n", self.namespace, f"{self.name}-redis-0", "--",
            "sh", "-c", f"REDIS_URL={url}; {script}",
        )  # fmt: skip

    def redis(self, expression: str) -> str:
        """``expression`` (no double quotes) evaluated in the Redis pod, where ``r`` is an
        administrator client (decoding replies); what it printed."""
        code = (
            "import os, redis; r = redis.Redis.from_url(os.environ['U'], decode_responses=True); "
            f"print({expression})"
        )
        return self.in_redis_pod(f'U="$REDIS_URL" python -c "{code}"').strip()

    def redis_pod(self) -> dict[str, Any]:
        return self.cluster.get("pod", f"{self.name}-redis-0", self.namespace)

    def acl_users(self) -> list[str]:
        return self.redis("' '.join(r.acl_users())").split()

    def audit(self, action: str, agent_id: str) -> str:
        return self.in_redis_pod(f'mas audit {action} {agent_id} --redis-url "$REDIS_URL"')


def chart_values(cluster: E2ECluster, image: str, storage_class: str) -> dict[str, Any]:
    repository, _, tag = image.rpartition(":")
    values: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "operator": {"statusIntervalSeconds": 2, "retrySeconds": 2},
        "redis": {
            "port": 6379,
            "embedded": {"persistence": {"storageClass": storage_class}},
        },
    }
    if cluster.local:
        # Every pod shares the machine's loopback: take ports that are free right now.
        values["hostNetwork"] = True
        values["hostAliases"] = [{"ip": "127.0.0.1", "hostnames": ["kubernetes.default.svc"]}]
        values["redis"]["port"] = free_port()
        values["operator"] |= {"healthPort": free_port(), "metricsPort": free_port()}
    return values


@contextlib.contextmanager
def installed(
    cluster: E2ECluster, values: dict[str, Any], name: str, namespace: str
) -> Iterator[Release]:
    """The chart installed as release ``name`` in ``namespace`` with ``values``, until the end
    of the block; then uninstalled, and its namespace and the CRDs deleted."""
    client = helm.Config(kubeconfig_path=str(cluster.kubeconfig), namespace=namespace)
    client.install(
        str(CHART), name, values, namespace=namespace, create_namespace=True, wait="watcher",
        timeout=300,
    )  # fmt: skip
    try:
        yield Release(cluster, client, values, name, namespace)
    finally:
        # Shown by pytest when a test failed: what the operator saw.
        print(
            cluster.kubectl(
                "logs", "-n", namespace, f"deployment/{name}-operator", "--tail=80", check=False
            )
        )
        client.uninstall(name, ignore_not_found=True, wait="watcher", timeout=180)
        # Helm never deletes the CRDs of a chart's crds/ folder, nor the Secrets and the claim
        # it keeps: the namespace goes with them, and the next run starts clean.
        cluster.kubectl("delete", "crd", *CRDS, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def release(e2e_cluster: E2ECluster, mas_image: str, volumes: HostVolumes) -> Iterator[Release]:
    volumes.provide(RELEASE_NAMESPACE, REDIS_CLAIM)
    values = chart_values(e2e_cluster, mas_image, volumes.storage_class)
    with installed(e2e_cluster, values, RELEASE, RELEASE_NAMESPACE) as chart:
        yield chart


def emptied(cluster: E2ECluster, namespace: str) -> None:
    """Delete the Agents and GatewayPolicies of ``namespace`` (their finalizers run: call it
    while the operator still runs)."""
    cluster.kubectl(
        "delete", "agents,gatewaypolicies,externalagents", "--all", "-n", namespace, "--wait=true",
        "--timeout=120s", check=False, timeout=150,
    )  # fmt: skip


@pytest.fixture
def workspace(release: Release, namespace: str) -> Iterator[str]:
    """A namespace whose Agents and GatewayPolicies are deleted while the operator still runs;
    the namespace itself goes afterwards."""
    yield namespace
    emptied(release.cluster, namespace)


def host_sidecar() -> dict[str, int]:
    """``spec.sidecar`` of an Agent on the host network: its API and its probes' listener on
    ports free right now (every pod shares the machine's network)."""
    return {"port": free_port(), "metricsPort": free_port()}


def healthcare(namespace: str, cluster: E2ECluster, image: str) -> list[dict[str, Any]]:
    """The example's policy and agents, moved to ``namespace`` (and onto the host network, each
    sidecar on a free port, on the local cluster)."""
    documents = []
    for name in ("policy.yaml", "doctor.yaml", "patient.yaml"):
        document = yaml.safe_load((EXAMPLE / name).read_text())
        document["metadata"]["namespace"] = namespace
        if document["kind"] == "Agent":
            document["spec"]["image"] = image
            if cluster.local:
                document["spec"]["hostNetwork"] = True
                document["spec"]["sidecar"] = host_sidecar()
        documents.append(document)
    return documents


def healthcare_agent(name: str, namespace: str, cluster: E2ECluster, image: str) -> dict[str, Any]:
    """One Agent of :func:`healthcare`."""
    return next(d for d in healthcare(namespace, cluster, image) if d["metadata"]["name"] == name)


def agent(cluster: E2ECluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.get("agent", name, namespace)


def pods_of(cluster: E2ECluster, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", f"mas.dev/agent={name}", "-o", "json"
    )
    return [p for p in json.loads(listed)["items"] if not p["metadata"].get("deletionTimestamp")]


def logs(cluster: E2ECluster, namespace: str, name: str) -> str:
    return cluster.kubectl(
        "logs", "-n", namespace, f"deployment/{name}", "-c", "agent", check=False
    )


def call_from(
    cluster: E2ECluster,
    namespace: str,
    name: str,
    path: str,
    message: dict[str, Any] | None = None,
    *,
    port: int | None = None,
    with_token: bool = True,
) -> int:
    """From inside the agent container of ``name``: a request to its own sidecar (or to the one
    on ``port`` of the pod's loopback), with the token the container was given (unless not
    ``with_token``), POSTing ``message`` if given; the status."""
    script = (
        "import json, os, sys, urllib.request, urllib.error\n"
        "base = os.environ['MAS_SIDECAR_URL'] if sys.argv[1] == '-' else"
        " 'http://127.0.0.1:' + sys.argv[1]\n"
        "body = sys.argv[3].encode() if sys.argv[3] != '-' else None\n"
        "request = urllib.request.Request(base + sys.argv[2], data=body,"
        " headers={'Content-Type': 'application/json'})\n"
        "if sys.argv[4] == 'token':\n"
        "    request.add_header('Authorization', 'Bearer ' + os.environ['MAS_SIDECAR_TOKEN'])\n"
        "try:\n    print(urllib.request.urlopen(request, timeout=10).status)\n"
        "except urllib.error.HTTPError as error:\n    print(error.code)\n"
    )
    out = cluster.kubectl(
        "exec", "-n", namespace, f"deployment/{name}", "-c", "agent", "--",
        "python", "-c", script, "-" if port is None else str(port), path,
        "-" if message is None else json.dumps(message), "token" if with_token else "none",
    )  # fmt: skip
    return int(out.strip())


def from_pod_address(cluster: E2ECluster, pod: dict[str, Any], port: int, path: str) -> str:
    """GET ``path`` on ``port`` of the pod's own address (``status.podIP``), as Prometheus and
    the kubelet reach it: straight from here where that address is on loopback (the local
    cluster: node IP 127.0.0.1 and host-network pods), otherwise through the API server's pod
    proxy, which connects to the pod's address from inside the cluster (traffic from here goes
    only to the API server). Raises ``urllib.error.HTTPError`` (direct) or ``HarnessError``
    (proxied) for an error status."""
    address = pod["status"]["podIP"]
    if ipaddress.ip_address(address).is_loopback:
        with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=10) as answer:
            return str(answer.read().decode())
    meta = pod["metadata"]
    proxy = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}:{port}/proxy{path}"
    return cluster.kubectl("get", "--raw", proxy)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of a Prometheus text exposition: (name, labels) → value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in found.items() if n == name and wanted <= have)


def send_as(cluster: E2ECluster, namespace: str, name: str, message: dict[str, Any]) -> int:
    """POST ``message`` to the agent's own sidecar from inside its agent container; the status."""
    return call_from(cluster, namespace, name, "/v1/messages", message)


def test_the_operator_starts_and_publishes_the_policy(release: Release) -> None:
    cluster = release.cluster
    operator = cluster.get("deployment", f"{RELEASE}-operator", RELEASE_NAMESPACE)
    assert operator["status"].get("availableReplicas") == 1
    # The bootstrap hook made the anchor and the Redis password, and went once it succeeded.
    anchor = cluster.get("secret", "mas-trust-anchor", RELEASE_NAMESPACE)
    assert set(anchor["data"]) == {"anchor.key", "anchor.pub"}
    assert anchor["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "password" in cluster.get("secret", f"{RELEASE}-redis", RELEASE_NAMESPACE)["data"]
    assert not cluster.kubectl(
        "get", "jobs,serviceaccounts", "-n", RELEASE_NAMESPACE, "-l",
        "app.kubernetes.io/component=bootstrap", "-o", "name",
    ).strip()  # fmt: skip
    configmap = wait_until(
        lambda: cluster.get("configmap", "mas-gateway-policy", RELEASE_NAMESPACE).get("data"),
        timeout=60,
        what="the operator publishes the (empty) policy at start-up",
    )
    assert json.loads(configmap["policy.json"])["revision"] == configmap["revision"]
    peering = cluster.get("clusterkopfpeering", "mas")
    assert peering["metadata"]["name"] == "mas"


def test_agents_talk_through_their_sidecars_under_the_policy(
    release: Release, workspace: str, mas_image: str
) -> None:
    namespace = workspace
    cluster = release.cluster
    cluster.apply(healthcare(namespace, cluster, mas_image))
    for name in ("doctor", "patient"):
        ready = wait_until(
            lambda name=name: (
                condition(agent(cluster, namespace, name), "Ready").get("status") == "True"
            ),
            timeout=240,
            what=f"Agent {name} Ready",
        )
        assert ready
    for name in ("doctor", "patient"):
        (pod,) = pods_of(cluster, namespace, name)
        containers = {c["name"]: c for c in pod["spec"]["containers"]}
        assert set(containers) == {"agent", "mas-sidecar"}
        agent_env = {e["name"]: e for e in containers["agent"].get("env", [])}
        assert "MAS_SIDECAR_URL" in agent_env and "MAS_REDIS_URL" not in agent_env
        # Its sidecar's API token, the one key of the credentials Secret it gets, as a value;
        # no mount: no credentials, no Kubernetes API token.
        assert agent_env["MAS_SIDECAR_TOKEN"]["valueFrom"] == {
            "secretKeyRef": {"name": f"{name}-mas-credentials", "key": "api-token"}
        }
        references = [
            e["valueFrom"]["secretKeyRef"]
            for e in containers["agent"]["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        ]
        # Besides it, only the example's optional Secret-backed OPENAI_API_KEY (no such Secret
        # here: the pod runs without it, and the doctor answers from its rule book).
        assert [r for r in references if r["name"] != "openai"] == [
            {"name": f"{name}-mas-credentials", "key": "api-token"}
        ]
        assert "volumeMounts" not in containers["agent"]
        sidecar_env = {e["name"]: e for e in containers["mas-sidecar"]["env"]}
        assert sidecar_env["MAS_REDIS_URL_FILE"]["value"].endswith("/redis-url")
        assert "secretKeyRef" not in json.dumps(containers["mas-sidecar"])  # secrets as files
        assert all(s["ready"] for s in pod["status"]["containerStatuses"])
        # The restricted Pod Security Standard, and the example still runs under it.
        assert pod["spec"]["securityContext"]["runAsUser"] == 65532
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        agent_context = containers["agent"]["securityContext"]
        assert agent_context["readOnlyRootFilesystem"] is True
        assert agent_context["allowPrivilegeEscalation"] is False
        assert agent_context["capabilities"] == {"drop": ["ALL"]}

    # A sidecar serves its own agent only: not a caller without the token, and (where pods
    # share the node's loopback) not another agent holding its own token.
    assert call_from(cluster, namespace, "patient", "/v1/self") == 200
    assert call_from(cluster, namespace, "patient", "/v1/self", with_token=False) == 401
    if cluster.local:
        doctor_port = agent(cluster, namespace, "doctor")["spec"]["sidecar"]["port"]
        for with_token in (True, False):
            status = call_from(
                cluster, namespace, "patient", "/v1/state", port=doctor_port, with_token=with_token
            )
            assert status == 401

    # The scripted consultation: answers delivered, an SSN redacted, a card blocked, admin denied.
    wait_until(
        lambda: FINISHED in logs(cluster, namespace, "patient"),
        timeout=180,
        what="the patient's consultation finishes",
    )
    doctor_log = logs(cluster, namespace, "doctor")
    assert "[REDACTED:us_ssn]" in doctor_log
    assert "123-45-6789" not in doctor_log
    patient_log = logs(cluster, namespace, "patient")
    assert "blocked by DLP (dlp_blocked)" in patient_log
    assert "denied by the gateway (forbidden)" in patient_log

    # Prometheus-format metrics on each pod's address (the sidecar's probes' listener, which
    # the kubelet's httpGet probes use too), never the message API there.
    for name in ("doctor", "patient"):
        (pod,) = pods_of(cluster, namespace, name)
        metrics_port = agent(cluster, namespace, name)["spec"]["sidecar"].get("metricsPort", 9090)
        sidecar = {c["name"]: c for c in pod["spec"]["containers"]}["mas-sidecar"]
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert sidecar[probe]["httpGet"] == {
                "path": path, "port": metrics_port, "scheme": "HTTP"
            }  # fmt: skip
        scraped = samples(from_pod_address(cluster, pod, metrics_port, "/metrics"))
        if name == "doctor":
            assert total(scraped, "mas_deliveries_total") > 0
            assert total(scraped, "mas_delivery_latency_seconds_count") > 0
            assert total(scraped, "mas_handler_seconds_count") > 0  # the SDK's, with its acks
        else:
            assert total(scraped, "mas_rule_decisions_total", decision="accepted") > 0
            assert total(scraped, "mas_rule_decisions_total", decision="denied") > 0
            assert total(scraped, "mas_dlp_findings_total", detector="payment_card") > 0
        try:
            from_pod_address(cluster, pod, metrics_port, "/v1/self")
        except urllib.error.HTTPError as error:
            assert error.code == 404
            assert json.loads(error.read())["error"]["code"] == "not_found"
        except HarnessError as error:  # through the API server's proxy
            assert "NotFound" in str(error) or "404" in str(error), error
        else:
            raise AssertionError(f"{name}'s message API answered on its metrics port")
    # The operator's per-agent gauges, on its pod's address too.
    (operator_pod,) = [
        p for p in json.loads(cluster.kubectl(
            "get", "pods", "-n", RELEASE_NAMESPACE, "-l", "app.kubernetes.io/component=operator",
            "-o", "json",
        ))["items"] if not p["metadata"].get("deletionTimestamp")
    ]  # fmt: skip
    operator_port = int(release.values["operator"].get("metricsPort", 9090))
    series = {("agent_namespace", namespace), ("agent", "doctor")}

    def doctor_gauges() -> bool:
        gauges = samples(from_pod_address(cluster, operator_pod, operator_port, "/metrics"))
        exported = {name for name, labels in gauges if series <= labels}
        return {"mas_agent_inbox_messages", "mas_agent_dead_letters"} <= exported

    wait_until(doctor_gauges, timeout=60, what="the operator's gauges of the doctor")

    # Every decision is in the patient's hash-chained audit trail, denied ones included.
    assert "intact" in release.audit("verify", f"{namespace}/patient")
    decisions = [
        json.loads(line)["event"]["decision"]
        for line in release.audit("export", f"{namespace}/patient").splitlines()
    ]
    assert "accepted" in decisions and "denied" in decisions and "dlp_blocked" in decisions

    # The sidecars report the policy in force; the policy's status counts them.
    policy = wait_until(
        lambda: (
            (p := cluster.get("gatewaypolicy", "healthcare", namespace))
            and p["status"].get("enforcedBy") == 2
            and p
        ),
        timeout=60,
        what="both sidecars enforce the policy",
    )
    revision = policy["status"]["revision"]
    assert condition(policy, "Valid")["status"] == "True"
    for name in ("doctor", "patient"):
        applied = wait_until(
            lambda name=name: (
                (a := agent(cluster, namespace, name))
                and condition(a, "PolicyApplied").get("status") == "True"
                and a
            ),
            timeout=60,
            what=f"PolicyApplied on {name}",
        )
        assert applied["status"]["policyRevision"] == revision

    # A policy change is in force within seconds, without restarting any pod.
    before = {
        pod["metadata"]["name"]: [c["restartCount"] for c in pod["status"]["containerStatuses"]]
        for name in ("doctor", "patient")
        for pod in pods_of(cluster, namespace, name)
    }
    question = {"to": "doctor", "type": "consultation.question", "payload": {"question": "Hi?"}}
    assert send_as(cluster, namespace, "patient", question) == 202
    paused = copy.deepcopy(policy["spec"])
    paused["rules"].append({"name": "pause", "action": "deny", "types": ["consultation.*"]})
    cluster.kubectl(
        "patch", "gatewaypolicy", "healthcare", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"rules": paused["rules"]}}),
    )  # fmt: skip
    wait_until(
        lambda: (
            (a := agent(cluster, namespace, "patient"))
            and a["status"].get("policyRevision") not in (None, revision)
        ),
        timeout=60,
        what="the patient's sidecars enforce the new revision",
    )
    assert send_as(cluster, namespace, "patient", question) == 403
    after = {
        pod["metadata"]["name"]: [c["restartCount"] for c in pod["status"]["containerStatuses"]]
        for name in ("doctor", "patient")
        for pod in pods_of(cluster, namespace, name)
    }
    assert after == before, "no pod was replaced or restarted"


def test_the_api_server_rejects_an_invalid_agent_with_a_clear_message(
    release: Release, workspace: str
) -> None:
    namespace = workspace
    bad = {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"image": "x:1", "replicas": -1, "sidecar": {"port": 80}},
    }
    with pytest.raises(HarnessError) as refused:
        release.cluster.apply(bad)
    message = str(refused.value)
    assert "spec.replicas" in message and "greater than or equal to 0" in message
    assert "spec.sidecar.port" in message
    bad_policy = {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "GatewayPolicy",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"rules": [{"name": "r", "action": "maybe"}]},
    }
    with pytest.raises(HarnessError) as refused_policy:
        release.cluster.apply(bad_policy)
    assert "spec.rules" in str(refused_policy.value) and "maybe" in str(refused_policy.value)


def test_the_operator_refuses_an_agent_that_mounts_another_agents_credentials(
    release: Release, workspace: str, mas_image: str
) -> None:
    namespace = workspace
    cluster = release.cluster
    thief = {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "thief", "namespace": namespace},
        "spec": {
            "image": mas_image,
            "volumes": [{"name": "loot", "secret": {"secretName": "doctor-mas-credentials"}}],
            "volumeMounts": [{"name": "loot", "mountPath": "/loot"}],
        },
    }
    cluster.apply(thief)
    refused = wait_until(
        lambda: (
            (c := condition(agent(cluster, namespace, "thief"), "Ready")).get("reason")
            == "Forbidden"
            and c
        ),
        timeout=60,
        what="the operator refuses the Agent",
    )
    assert refused["status"] == "False"
    assert "doctor-mas-credentials" in refused["message"]
    assert not cluster.kubectl(
        "get", "deployment", "thief", "-n", namespace, "--ignore-not-found"
    ).strip()


def field_managers(cluster: E2ECluster, kind: str, name: str, namespace: str) -> set[str]:
    """``manager/operation`` of each entry of the object's managedFields."""
    from kubernetes import client  # noqa: PLC0415 - as E2ECluster.api_client

    api = cluster.api_client()
    read = (
        client.AppsV1Api(api).read_namespaced_deployment
        if kind == "deployment"
        else client.CoreV1Api(api).read_namespaced_secret
    )
    entries = read(name, namespace).metadata.managed_fields or ()
    return {f"{entry.manager}/{entry.operation}" for entry in entries}


def test_hand_edits_of_an_agents_deployment_and_secret_are_taken_back(
    release: Release, workspace: str, mas_image: str
) -> None:
    namespace = workspace
    cluster = release.cluster
    cluster.apply(healthcare_agent("doctor", namespace, cluster, mas_image))
    secret_name = "doctor-mas-credentials"
    built = wait_until(
        lambda: cluster.get("deployment", "doctor", namespace), timeout=60, what="the Deployment"
    )
    issued = wait_until(
        lambda: cluster.get("secret", secret_name, namespace), timeout=60, what="the Secret"
    )
    for kind, name in (("deployment", "doctor"), ("secret", secret_name)):
        assert "mas-operator/Apply" in field_managers(cluster, kind, name, namespace)
    assert "mas.dev/applied" not in (built["metadata"].get("annotations") or {})
    trust_key = next(key for key in issued["data"] if key.startswith("trust."))

    cluster.kubectl("scale", "deployment", "doctor", "-n", namespace, "--replicas=3")
    cluster.kubectl(
        "label", "deployment", "doctor", "-n", namespace, "--overwrite",
        "mas.dev/agent=someone-else", "team=blue",
    )  # fmt: skip
    edit = {
        "metadata": {"annotations": {"note": "kept"}},
        "data": {trust_key: "bm90IHRoZSBhbmNob3I="},
    }
    cluster.kubectl(
        "patch", "secret", secret_name, "-n", namespace, "--type=merge", "-p", json.dumps(edit)
    )

    def taken_back() -> bool:
        deployment = cluster.get("deployment", "doctor", namespace)
        secret = cluster.get("secret", secret_name, namespace)
        return (
            deployment["spec"]["replicas"] == 1
            and deployment["metadata"]["labels"]["mas.dev/agent"] == "doctor"
            and secret["data"] == issued["data"]
        )

    wait_until(taken_back, timeout=60, what="the operator's fields applied again")
    deployment = cluster.get("deployment", "doctor", namespace)
    secret = cluster.get("secret", secret_name, namespace)
    assert deployment["metadata"]["labels"]["team"] == "blue"
    assert (secret["metadata"].get("annotations") or {}).get("note") == "kept"
    assert deployment["spec"]["template"] == built["spec"]["template"]

    # A round that changes nothing writes nothing: the Secret is applied before the Deployment
    # in every status round, so once a new scaling is taken back, one went by.
    version = secret["metadata"]["resourceVersion"]
    cluster.kubectl("scale", "deployment", "doctor", "-n", namespace, "--replicas=2")
    wait_until(
        lambda: cluster.get("deployment", "doctor", namespace)["spec"]["replicas"] == 1,
        timeout=60,
        what="the scaling taken back",
    )
    assert cluster.get("secret", secret_name, namespace)["metadata"]["resourceVersion"] == version


def test_deleting_an_agent_removes_its_redis_user_and_objects(
    release: Release, workspace: str, mas_image: str
) -> None:
    namespace = workspace
    cluster = release.cluster
    cluster.apply(healthcare_agent("doctor", namespace, cluster, mas_image))
    user = f"mas-agent.{namespace}.doctor"
    wait_until(lambda: user in release.acl_users(), timeout=60, what="the ACL user exists")
    wait_until(
        lambda: cluster.kubectl("get", "deployment", "doctor", "-n", namespace, check=False),
        timeout=60,
        what="the Deployment exists",
    )
    cluster.kubectl("delete", "agent", "doctor", "-n", namespace, "--wait=true", timeout=120)
    assert user not in release.acl_users()
    for kind, name in (("deployment", "doctor"), ("secret", "doctor-mas-credentials")):
        wait_until(
            lambda kind=kind, name=name: (
                not cluster.kubectl(
                    "get", kind, name, "-n", namespace, "--ignore-not-found", check=False
                ).strip()
            ),
            timeout=120,
            what=f"the {kind} goes with its owner",
        )


WAITING = ["python", "-c", "import time; time.sleep(10**9)"]  # an agent that only holds its pod
TAKE = """
import asyncio, json, sys
from mas import SidecarClient

async def take(wanted):
    taken = []
    async with SidecarClient() as client:
        async for delivery in client.deliveries():
            taken.append(delivery["payload"]["n"])
            await client.ack(delivery["id"])
            if wanted <= set(taken):  # at least once: a note may come twice
                return taken

print(json.dumps(asyncio.run(asyncio.wait_for(take(set(json.loads(sys.argv[1]))), 150))))
"""


def waiting_agents(namespace: str, cluster: E2ECluster, image: str) -> list[dict[str, Any]]:
    """A ``sender`` allowed to send notes to a ``sink``; neither program takes deliveries."""
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "mas.dev/v1alpha1",
            "kind": "GatewayPolicy",
            "metadata": {"name": "notes", "namespace": namespace},
            "spec": {
                "rules": [
                    {"name": "notes", "action": "allow", "from": {"agents": ["sender"]},
                     "to": {"agents": ["sink"]}, "types": ["note"]}
                ]
            },
        }
    ]  # fmt: skip
    for name in ("sender", "sink"):
        spec: dict[str, Any] = {"image": image, "command": WAITING}
        if cluster.local:
            spec |= {"hostNetwork": True, "sidecar": host_sidecar()}
        documents.append(
            {
                "apiVersion": "mas.dev/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            }
        )
    return documents


def note(n: int) -> dict[str, Any]:
    return {"to": "sink", "type": "note", "payload": {"n": n}}


def agents_ready(cluster: E2ECluster, namespace: str, image: str) -> None:
    """The ``waiting_agents`` applied in ``namespace``, and Ready."""
    cluster.apply(waiting_agents(namespace, cluster, image))
    for name in ("sender", "sink"):
        wait_until(
            lambda name=name: (
                condition(agent(cluster, namespace, name), "Ready").get("status") == "True"
            ),
            timeout=240,
            what=f"Agent {name} Ready",
        )


@dataclass
class Survived:
    """What one fault of Redis did to the notes the sender's sidecar accepted just before it."""

    fault: str
    accepted: int
    lost: int
    working_again_s: float  # from the fault until the sender's sidecar accepts a note again

    def __str__(self) -> str:
        return (
            f"Redis {self.fault}: {self.lost} of {self.accepted} accepted messages lost; the "
            f"sender's sidecar accepted again {self.working_again_s:.1f} s after the fault"
        )


def through_a_fault(
    release: Release, namespace: str, fault: str, act: Callable[[], None], *, first: int,
    kept: bool,
) -> Survived:  # fmt: skip
    """Five notes accepted (numbered from ``first``), then ``act`` breaks Redis; once the
    sender's sidecar accepts a sixth, the sink takes every note Redis ``kept`` (or only the
    sixth) and what is missing of the five is counted lost."""
    cluster, accepted = release.cluster, 5
    before = list(range(first, first + accepted))
    for n in before:
        assert send_as(cluster, namespace, "sender", note(n)) == 202
    broke = time.monotonic()
    act()
    after = first + accepted
    wait_until(
        lambda: send_as(cluster, namespace, "sender", note(after)) == 202,
        timeout=120,
        what="the sender's sidecar accepts a message again",
    )
    working_again = time.monotonic() - broke
    wanted = [*before, after] if kept else [after]
    out = cluster.kubectl(
        "exec", "-n", namespace, "deployment/sink", "-c", "agent", "--",
        "python", "-c", TAKE, json.dumps(wanted), timeout=180,
    )  # fmt: skip
    taken = set(json.loads(out))
    survived = Survived(fault, accepted, len(set(before) - taken), working_again)
    print(survived)
    return survived


def replace_redis_pod(release: Release) -> None:
    """Delete the Redis pod (SIGTERM: the server stops cleanly) and wait for its successor."""
    before = release.redis_pod()["metadata"]["uid"]
    release.cluster.kubectl("delete", "pod", f"{release.name}-redis-0", "-n", release.namespace)
    wait_until(
        lambda: (
            (pod := release.redis_pod())["metadata"]["uid"] != before
            and all(c["ready"] for c in pod["status"].get("containerStatuses") or [{}])
        ),
        timeout=180,
        what="a new Redis pod is ready",
    )


def test_redis_keeps_accepted_messages_users_and_policy_when_its_pod_is_replaced_or_killed(
    release: Release, workspace: str, mas_image: str
) -> None:
    namespace, cluster = workspace, release.cluster
    claim = cluster.get("persistentvolumeclaim", REDIS_CLAIM, RELEASE_NAMESPACE)
    assert claim["status"]["phase"] == "Bound"
    agents_ready(cluster, namespace, mas_image)
    users = {f"mas-agent.{namespace}.{name}" for name in ("sender", "sink")}
    revision = release.redis("r.get('mas:{policy}:revision')")

    def replaced() -> None:
        replace_redis_pod(release)
        # Kept, not recreated: the users and the policy are there as soon as the server is.
        assert users <= set(release.acl_users())
        assert release.redis("r.get('mas:{policy}:revision')") == revision != "None"

    survived = through_a_fault(release, namespace, "pod replaced", replaced, first=0, kept=True)
    assert survived.lost == 0

    if cluster.docker_host is None:
        return  # a crash needs the node's container runtime (the local cluster's)

    def killed() -> None:
        # The append-only file reaches the disk every second (appendfsync everysec): what was
        # accepted longer ago than that survives a crash, which the README promises.
        time.sleep(2)
        restarts = release.redis_pod()["status"]["containerStatuses"][0]["restartCount"]
        cluster.kill_container(f"{release.name}-redis-0", release.namespace, "redis")
        wait_until(
            lambda: (
                (status := release.redis_pod()["status"]["containerStatuses"][0])["ready"]
                and status["restartCount"] > restarts
            ),
            timeout=180,
            what="the kubelet restarts the killed Redis",
        )

    survived = through_a_fault(release, namespace, "SIGKILLed", killed, first=10, kept=True)
    assert survived.lost == 0


THINKER = """
import asyncio, os
from mas import Agent, AgentMessage

class Thinker(Agent):
    @Agent.on("think")
    async def think(self, message: AgentMessage) -> None:
        print("started", message.id, message.attempt, os.environ["HOSTNAME"], flush=True)
        await asyncio.sleep(6)  # an LLM call as long as three leases of 2 s
        print("finished", message.id, flush=True)

Thinker().run()
"""


def test_a_handler_running_three_leases_runs_once_across_the_agents_replicas(
    release: Release, workspace: str, mas_image: str
) -> None:
    """The SDK renews the lease of a running handler: no replica gets the message meanwhile.
    (Two replicas on kind; one on the local host-network cluster, where two replicas' sidecars
    would want the same host port.)"""
    namespace, cluster = workspace, release.cluster
    replicas = 1 if cluster.local else 2
    thinker: dict[str, Any] = {
        "image": mas_image, "command": ["python", "-c", THINKER], "replicas": replicas,
        "delivery": {"leaseSeconds": 2},
    }  # fmt: skip
    sender: dict[str, Any] = {"image": mas_image, "command": WAITING}
    if cluster.local:
        thinker |= {"hostNetwork": True, "sidecar": host_sidecar()}
        sender |= {"hostNetwork": True, "sidecar": host_sidecar()}
    policy = {
        "apiVersion": "mas.dev/v1alpha1", "kind": "GatewayPolicy",
        "metadata": {"name": "thinking", "namespace": namespace},
        "spec": {"rules": [{"name": "think", "action": "allow", "from": {"agents": ["sender"]},
                            "to": {"agents": ["thinker"]}, "types": ["think"]}]},
    }  # fmt: skip
    cluster.apply(
        [
            policy,
            *(
                {"apiVersion": "mas.dev/v1alpha1", "kind": "Agent",
                 "metadata": {"name": name, "namespace": namespace}, "spec": spec}
                for name, spec in (("thinker", thinker), ("sender", sender))
            ),
        ]
    )  # fmt: skip
    for name in ("thinker", "sender"):
        wait_until(
            lambda name=name: (
                condition(agent(cluster, namespace, name), "Ready").get("status") == "True"
            ),
            timeout=240,
            what=f"Agent {name} Ready",
        )
    wait_until(
        lambda: len(pods_of(cluster, namespace, "thinker")) == replicas,
        timeout=240,
        what=f"{replicas} thinker pods",
    )
    for n in range(3):
        message = {"to": "thinker", "type": "think", "payload": {"n": n}}
        assert send_as(cluster, namespace, "sender", message) == 202

    def lines() -> list[list[str]]:
        return [
            line.split()
            for pod in pods_of(cluster, namespace, "thinker")
            for line in cluster.kubectl(
                "logs", "-n", namespace, pod["metadata"]["name"], "-c", "agent", check=False
            ).splitlines()
            if line.startswith(("started ", "finished "))
        ]

    wait_until(
        lambda: sum(line[0] == "finished" for line in lines()) >= 3,
        timeout=180,
        what="three handlers finished",
    )
    time.sleep(2)  # one lease more: room for a second run that must not come
    started = [line for line in lines() if line[0] == "started"]
    print(f"{len(started)} runs for 3 messages on {replicas} replicas: {started}")
    assert len({line[1] for line in started}) == len(started) == 3
    assert [line[2] for line in started] == ["1", "1", "1"]


def scale_of(cluster: E2ECluster, namespace: str, name: str) -> dict[str, Any]:
    """The Agent's ``scale`` subresource, as an autoscaler reads it."""
    path = f"/apis/mas.dev/v1alpha1/namespaces/{namespace}/agents/{name}/scale"
    scale: dict[str, Any] = json.loads(cluster.kubectl("get", "--raw", path))
    return scale


def test_an_agent_scales_through_its_scale_subresource(
    release: Release, workspace: str, mas_image: str
) -> None:
    """``kubectl scale agent`` and an HPA's update of the ``scale`` subresource set the Agent's
    replicas, the operator hands them to its Deployment, and the status (which the subresource
    serves) follows the Deployment's pods. On the local host-network cluster a second replica
    cannot run beside the first (both sidecars want one host port), so there 2 is checked on
    the Deployment and the subresource's ``status.replicas`` (pods made), readiness on 0 and 1;
    on kind two replicas get ready."""
    namespace, cluster = workspace, release.cluster
    spec: dict[str, Any] = {"image": mas_image, "command": WAITING}
    if cluster.local:
        spec |= {"hostNetwork": True, "sidecar": host_sidecar()}
    cluster.apply(
        {
            "apiVersion": "mas.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "scaled", "namespace": namespace},
            "spec": spec,
        }
    )
    selector = "app.kubernetes.io/name=mas-agent,mas.dev/agent=scaled"

    def settled(replicas: int, ready: int) -> dict[str, Any] | None:
        status = agent(cluster, namespace, "scaled").get("status") or {}
        deployment = cluster.get("deployment", "scaled", namespace)
        done = (
            deployment["spec"]["replicas"] == replicas
            and status.get("replicas") == replicas
            and status.get("readyReplicas") == ready
            and status.get("readiness") == f"{ready}/{replicas}"
        )
        return status if done else None

    wait_until(lambda: settled(1, 1), timeout=240, what="1 of 1 replicas ready")
    scale = scale_of(cluster, namespace, "scaled")
    assert (scale["kind"], scale["apiVersion"]) == ("Scale", "autoscaling/v1")
    assert scale["spec"] == {"replicas": 1}
    assert scale["status"] == {"replicas": 1, "selector": selector}
    assert len(pods_of(cluster, namespace, "scaled")) == 1
    printed = cluster.kubectl("get", "agent", "scaled", "-n", namespace).splitlines()
    assert printed[0].split()[:4] == ["NAME", "READY", "STATUS", "BACKLOG"]
    assert printed[1].split()[:4] == ["scaled", "1/1", "Available", "0"]

    cluster.kubectl("scale", "agent/scaled", "-n", namespace, "--replicas=0")
    wait_until(lambda: settled(0, 0), timeout=120, what="scaled to zero")

    # As a HorizontalPodAutoscaler does: read the Scale, then replace it with new replicas.
    from kubernetes import client  # noqa: PLC0415 - as E2ECluster.api_client

    api = client.CustomObjectsApi(cluster.api_client())
    current = api.get_namespaced_custom_object_scale(
        "mas.dev", "v1alpha1", namespace, "agents", "scaled"
    )
    current["spec"]["replicas"] = 1
    api.replace_namespaced_custom_object_scale(
        "mas.dev", "v1alpha1", namespace, "agents", "scaled", current
    )
    wait_until(lambda: settled(1, 1), timeout=240, what="back to 1 of 1 ready")
    assert agent(cluster, namespace, "scaled")["spec"]["replicas"] == 1

    cluster.kubectl("scale", "agent/scaled", "-n", namespace, "--replicas=2")
    if cluster.local:
        wait_until(
            lambda: (
                scale_of(cluster, namespace, "scaled")["status"]["replicas"] == 2
                and cluster.get("deployment", "scaled", namespace)["spec"]["replicas"] == 2
            ),
            timeout=120,
            what="a second pod made",
        )
    else:
        wait_until(lambda: settled(2, 2), timeout=240, what="2 of 2 replicas ready")
    assert scale_of(cluster, namespace, "scaled")["spec"] == {"replicas": 2}


A2A_EXAMPLE = ROOT / "examples" / "a2a"
A2A_KEY = "partner-e2e-key-0123456789abcdef"
GLOSSARY_TOKEN = "glossary-e2e-token-0123456789abcdef"


def a2a_example(
    namespace: str, cluster: E2ECluster, image: str, a2a_port: int, glossary_port: int
) -> list[dict[str, Any]]:
    """``examples/a2a``'s policy, assistant (its A2A port ``a2a_port``) and glossary (the
    ExternalAgent, served on the host's loopback at ``glossary_port``) in ``namespace``, and the
    Secrets of the client's API key and the glossary's token."""
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "a2a-partner", "namespace": namespace},
            "stringData": {"api-key": A2A_KEY},
        },
        {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "a2a-glossary", "namespace": namespace},
            "stringData": {"token": GLOSSARY_TOKEN},
        },
    ]  # fmt: skip
    for name in ("policy.yaml", "glossary.yaml", "assistant.yaml"):
        document = yaml.safe_load((A2A_EXAMPLE / name).read_text())
        document["metadata"]["namespace"] = namespace
        if document["kind"] == "ExternalAgent":
            document["spec"]["url"] = f"http://127.0.0.1:{glossary_port}/"
            document["spec"]["cardUrl"] = (
                f"http://127.0.0.1:{glossary_port}/.well-known/agent-card.json"
            )
        if document["kind"] == "Agent":
            spec = document["spec"]
            del spec["local"]
            spec["image"] = image
            spec["command"] = ["python", "/opt/mas/examples/a2a/assistant.py"]
            spec["a2a"]["port"] = a2a_port
            if cluster.local:
                spec["hostNetwork"] = True
                spec["sidecar"] = host_sidecar()
        documents.append(document)
    return documents


async def ask_over_a2a(url: str, text: str) -> str:
    """The answer to ``text`` of the A2A agent at ``url``, asked with the official ``a2a-sdk``
    client (the card's interface URL, the agent's Service, is replaced by ``url``)."""
    import httpx  # noqa: PLC0415 - the test extra's, only for this test
    from a2a.client import A2ACardResolver, ClientConfig, create_client  # noqa: PLC0415
    from a2a.types import a2a_pb2 as a2a  # noqa: PLC0415

    headers = {"Authorization": f"Bearer {A2A_KEY}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        card = await A2ACardResolver(http, url).get_agent_card()
        card.supported_interfaces[0].url = f"{url}/"
        config = ClientConfig(streaming=False, httpx_client=http)
        client = await create_client(card, client_config=config)
        request = a2a.SendMessageRequest(
            message=a2a.Message(message_id="e2e-1", role=a2a.ROLE_USER, parts=[a2a.Part(text=text)])
        )
        (response,) = [response async for response in client.send_message(request)]
        return " ".join(part.text for part in response.message.parts)


@contextlib.contextmanager
def glossary_on_loopback(port: int) -> Iterator[None]:
    """``examples/a2a/glossary.py`` (an ``a2a-sdk`` server, no mas code) on the host's loopback
    at ``port``, expecting :data:`GLOSSARY_TOKEN`."""
    env = {**os.environ, "A2A_TOKEN": GLOSSARY_TOKEN}
    glossary = subprocess.Popen(
        [sys.executable, str(A2A_EXAMPLE / "glossary.py"), str(port)],
        env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        card = f"http://127.0.0.1:{port}/.well-known/agent-card.json"
        wait_until(lambda: http_status(card) == 200, timeout=60, what="the glossary serves")
        yield
    finally:
        glossary.terminate()
        glossary.wait(timeout=30)


def http_status(url: str) -> int:
    """The status of a GET of ``url``; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_an_exposed_agent_answers_a2a_calls_through_its_sidecar_and_calls_an_external_agent(
    release: Release, workspace: str, mas_image: str
) -> None:
    namespace, cluster, a2a_port, glossary_port = (
        workspace,
        release.cluster,
        free_port(),
        free_port(),
    )
    cluster.apply(a2a_example(namespace, cluster, mas_image, a2a_port, glossary_port))
    wait_until(
        lambda: condition(agent(cluster, namespace, "assistant"), "Ready").get("status") == "True",
        timeout=240,
        what="Agent assistant Ready",
    )
    service = cluster.get("service", "assistant-a2a", namespace)
    assert service["spec"]["ports"][0]["port"] == a2a_port
    (pod,) = pods_of(cluster, namespace, "assistant")
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "mas-sidecar")
    assert {"name": "a2a", "containerPort": a2a_port} in [
        {k: p[k] for k in ("name", "containerPort")} for p in sidecar["ports"]
    ]
    # From inside the pod, on every cluster: the card, then a call without a key is refused.
    assert call_from(cluster, namespace, "assistant", "/.well-known/agent-card.json",
                     port=a2a_port, with_token=False) == 200  # fmt: skip
    refused = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {}}
    assert call_from(cluster, namespace, "assistant", "/", refused, port=a2a_port,
                     with_token=False) == 401  # fmt: skip
    if cluster.local:  # the pod shares the host's loopback: the official client, from here
        answer = asyncio.run(
            ask_over_a2a(f"http://127.0.0.1:{a2a_port}", "Summarize: One two three. Four.")
        )
        assert answer == "4 words, 2 sentences; the longest word is 'three'"
        assert "A2A call from external/partner" in logs(cluster, namespace, "assistant")

    # Outbound: the operator registers the ExternalAgent and gives its token to the assistant's
    # sidecar, which the policy lets ask it.
    glossary = wait_until(
        lambda: (
            (found := cluster.get("externalagent", "glossary", namespace))
            and condition(found, "Registered").get("status") == "True"
            and found
        ),
        timeout=60,
        what="ExternalAgent glossary Registered",
    )
    assert condition(glossary, "CredentialsReady").get("reason") == "Found"
    remotes = wait_until(
        lambda: cluster.get("secret", "assistant-mas-remotes", namespace).get("data") or None,
        timeout=60,
        what="the glossary's token in the assistant's remotes Secret",
    )
    assert base64.b64decode(remotes[f"{namespace}.glossary"]).decode() == GLOSSARY_TOKEN
    # The kubelet brings the token into the running sidecar within its sync period.
    mounted = f"/var/run/mas/a2a-remotes/{namespace}.glossary"
    wait_until(
        lambda: cluster.kubectl(
            "exec", "-n", namespace, "deployment/assistant", "-c", "mas-sidecar", "--",
            "python", "-c", f"print(open({mounted!r}).read())", check=False,
        ).strip() == GLOSSARY_TOKEN,
        timeout=180,
        what="the glossary's token mounted into the assistant's sidecar",
    )  # fmt: skip
    if cluster.local:  # the glossary on the host's loopback, which the pod shares
        with glossary_on_loopback(glossary_port):
            answer = asyncio.run(ask_over_a2a(f"http://127.0.0.1:{a2a_port}", "Define: sidecar"))
        assert answer.startswith("sidecar: a process next to an agent"), answer


# Last of the tests on the shared release: it uninstalls it.
def test_helm_upgrade_rollback_and_uninstall_leave_nothing_behind(release: Release) -> None:
    cluster = release.cluster

    def operator_env() -> dict[str, str]:
        deployment = cluster.get("deployment", f"{RELEASE}-operator", RELEASE_NAMESPACE)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value", "") for e in container["env"]}

    def secret_data(name: str) -> dict[str, str]:
        return dict(cluster.get("secret", name, RELEASE_NAMESPACE)["data"])

    password, anchor = secret_data(f"{RELEASE}-redis"), secret_data("mas-trust-anchor")
    upgraded = copy.deepcopy(release.values)
    upgraded["operator"]["logLevel"] = "DEBUG"
    release.helm.upgrade(
        str(CHART), RELEASE, upgraded, namespace=RELEASE_NAMESPACE, wait="watcher", timeout=300
    )
    assert operator_env()["MAS_LOG_LEVEL"] == "DEBUG"
    assert secret_data(f"{RELEASE}-redis") == password, "upgrades keep the Redis password"
    assert secret_data("mas-trust-anchor") == anchor, "upgrades keep the trust anchor"

    release.helm.rollback(RELEASE, version=1, wait="watcher", timeout=300)
    assert operator_env()["MAS_LOG_LEVEL"] == "INFO"
    assert len(release.helm.history(RELEASE)) == 3

    release.helm.uninstall(RELEASE, wait="watcher", timeout=180)
    selector = f"app.kubernetes.io/instance={RELEASE}"
    kinds = (
        "deployments,statefulsets,services,secrets,configmaps,serviceaccounts,roles,"
        "rolebindings,pods,jobs,persistentvolumeclaims"
    )

    def leftovers() -> str:
        namespaced = cluster.kubectl(
            "get", kinds, "-n", RELEASE_NAMESPACE, "-l", selector, "-o", "name"
        )
        cluster_wide = cluster.kubectl(
            "get",
            "clusterroles,clusterrolebindings,clusterkopfpeerings",
            "-l",
            selector,
            "-o",
            "name",
        )
        return (namespaced + cluster_wide).strip()

    # Kept: the trust anchor and the Redis password (no release owns them) and the Redis data.
    assert secret_data("mas-trust-anchor") == anchor
    assert secret_data(f"{RELEASE}-redis") == password
    wait_until(
        lambda: leftovers() == f"persistentvolumeclaim/{REDIS_CLAIM}",
        timeout=120,
        what="nothing of the release is left but the Redis data's claim",
    )
    # Deleted as the chart's README says, they go.
    cluster.kubectl("delete", "secret", *KEPT_SECRETS, "-n", RELEASE_NAMESPACE)
    cluster.kubectl("delete", "pvc", REDIS_CLAIM, "-n", RELEASE_NAMESPACE, "--wait=false")
    wait_until(lambda: not leftovers(), timeout=120, what="nothing of the release is left")
    assert not cluster.kubectl(
        "get", "secrets", "-n", RELEASE_NAMESPACE, "-o", "name", "--field-selector",
        f"metadata.name={KEPT_SECRETS[0]}",
    ).strip()  # fmt: skip


@pytest.fixture
def release_without_persistence(e2e_cluster: E2ECluster, mas_image: str) -> Iterator[Release]:
    """A second release (after the first is gone) whose Redis keeps nothing: an emptyDir."""
    values = chart_values(e2e_cluster, mas_image, storage_class="")
    values["redis"]["embedded"]["persistence"] = {"enabled": False}
    # A release name with the chart's in it: objects are named "<release>-redis" etc.
    with installed(e2e_cluster, values, "mas-ephemeral", "mas-ephemeral") as chart:
        yield chart


@pytest.fixture
def workspace_without_persistence(
    release_without_persistence: Release, namespace: str
) -> Iterator[str]:
    """``workspace``, for the release without persistence."""
    yield namespace
    emptied(release_without_persistence.cluster, namespace)


def test_without_persistence_a_replaced_redis_is_provisioned_again_and_agents_work_on(
    release_without_persistence: Release, workspace_without_persistence: str, mas_image: str
) -> None:
    release, cluster = release_without_persistence, release_without_persistence.cluster
    namespace = workspace_without_persistence
    agents_ready(cluster, namespace, mas_image)
    users = {f"mas-agent.{namespace}.{name}" for name in ("sender", "sink")}

    def replaced() -> None:
        replace_redis_pod(release)
        # The new server starts empty; the operator notices and provisions it again.
        wait_until(
            lambda: users <= set(release.acl_users()),
            timeout=60,
            what="the operator re-creates the agents' Redis users",
        )

    survived = through_a_fault(release, namespace, "pod replaced without persistence", replaced,
                               first=0, kept=False)  # fmt: skip
    assert survived.lost == survived.accepted  # as the README says: the server kept nothing
    assert release.redis("r.get('mas:{policy}:revision')") != "None"
