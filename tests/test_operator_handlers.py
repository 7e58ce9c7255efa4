"""The operator's kopf handlers under KopfRunner, against the kmock emulator and a real Redis.

kmock stands in for the API server (no schema validation, no controllers: the CRD schemas are
tested in test_crds.py, the real reconcile on a cluster in the e2e suite); Redis is real, so the
ACL users, registry entries, policy documents and deletions checked here are the real thing.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time
from base64 import b64decode, b64encode
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import kmock
import orjson
import pytest
import redis
from prometheus_client import generate_latest

from mas_cli.audit_trails import Evidence, verify_trail
from mas_cli.local.processes import ChildProcess, sidecar_args
from mas_cli.local.redis_server import RedisServer, free_port
from mas_core.acl import acl_username, generate_password
from mas_core.audit.chain import Chain
from mas_core.functions import VERSION
from mas_core.identity.credentials import parse_agent_credentials
from mas_core.identity.tokens import key_id, load_private_key_pem
from mas_core.keys import (
    POLICY_DOCUMENT,
    POLICY_REVISION,
    REGISTRY_AGENTS,
    AgentKeys,
    audit_checkpoint,
)
from mas_core.sidecar_token import TOKEN_ENV, authorization
from tests.a2a_remote import TOKEN as GLOSSARY_TOKEN
from tests.a2a_remote import Remote
from tests.api import Api
from tests.monitoring import alert_rules, metric_names, queries, rendered
from tests.operator_harness import (
    AGENTS,
    CONFIGMAPS,
    DEPLOYMENTS,
    EXTERNALS,
    OPERATOR_NAMESPACE,
    POLICIES,
    SECRETS,
    SERVICES,
    OperatorHarness,
    ServerSideApplyEmulator,
    condition,
    emulated_api,
    harness_config,
)
from tests.prometheus import Scrape, scrape
from tests.waiting import eventually

if TYPE_CHECKING:
    from conftest import Sidecars

pytestmark = pytest.mark.kmock(cls=ServerSideApplyEmulator)


@pytest.fixture
async def harness(
    kmock: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OperatorHarness]:
    async with emulated_api(kmock, tmp_path / "kubeconfig", monkeypatch) as harness:
        try:
            yield harness
        finally:
            output = await harness.stop()
            assert "Traceback" not in output or "TemporaryError" in output, output[-4000:]


@pytest.fixture
def empty_redis(redis_server: Any) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    for user in client.acl_users():
        if user.startswith("mas-agent."):
            client.acl_deluser(user)
    client.close()
    return str(redis_server.url)


def agent_body(name: str = "worker", namespace: str = "team", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "image": "registry.example/worker:1",
            "capabilities": ["summarize"],
            "roles": ["analyst"],
            **spec,
        },
    }


def policy_body(name: str, namespace: str = "team", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "GatewayPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def secret_files(harness: OperatorHarness, namespace: str, name: str) -> dict[str, bytes]:
    secret = harness.object(SECRETS, namespace, f"{name}-mas-credentials")
    assert secret is not None
    return {key: b64decode(value) for key, value in secret["data"].items()}


def anchor_public_keys(harness: OperatorHarness) -> dict[str, Any]:
    anchor = harness.object(SECRETS, OPERATOR_NAMESPACE, "mas-trust-anchor")
    assert anchor is not None
    key = load_private_key_pem(b64decode(anchor["data"]["anchor.key"])).verify_key
    return {key_id(key): key}


async def test_agent_gets_secret_acl_user_registry_entry_and_deployment(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(AGENTS, agent_body())

    deployment = await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert containers["mas-sidecar"]["image"] == "mas:test"
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "uid-team-worker"

    files = secret_files(harness, "team", "worker")
    credentials = parse_agent_credentials(
        anchor_public_keys(harness), files["agent.key"], files["token"], agent_id="team/worker"
    )
    assert credentials.claims.roles == ("analyst",)
    assert credentials.claims.capabilities == ("summarize",)

    # The Secret's Redis URL logs in as the agent's own least-privilege user.
    url = files["redis-url"].decode()
    assert f"//{acl_username('team/worker')}:" in url
    agent_client = redis.Redis.from_url(url)
    try:
        assert agent_client.ping()
        agent_client.xadd(AgentKeys("team/other").inbox("team/worker"), {"e": b"{}"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            agent_client.xrange(AgentKeys("team/other").inbox("team/worker"))
    finally:
        agent_client.close()

    admin = redis.Redis.from_url(empty_redis)
    entry = admin.hget(REGISTRY_AGENTS, "team/worker")
    admin.close()
    assert entry is not None and b"summarize" in entry

    agent = await eventually(
        lambda: (
            condition(harness.object(AGENTS, "team", "worker"), "CredentialsIssued")
            and harness.object(AGENTS, "team", "worker")
        )
    )
    assert condition(agent, "RedisACLReady")["status"] == "True"
    assert condition(agent, "CredentialsIssued")["status"] == "True"
    assert condition(agent, "Ready")["status"] == "False"
    assert agent["status"]["observedGeneration"] == 1
    assert agent["status"]["tokenExpiresAt"].endswith("Z")
    assert "mas.dev/finalizer" in agent["metadata"]["finalizers"]


def containers_of(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


class PodSidecar:
    """The sidecar container of a Deployment run as a local process the way the kubelet would
    run it: the Secrets it mounts laid out where the container mounts them (under ``root``; the
    items listed, or every key; an optional Secret that is missing as an empty directory), the
    container's environment, its command's agent id and port."""

    def __init__(self, harness: OperatorHarness, deployment: dict[str, Any], root: Path) -> None:
        pod = deployment["spec"]["template"]["spec"]
        container = containers_of(deployment)["mas-sidecar"]
        namespace = deployment["metadata"]["namespace"]
        paths: dict[str, str] = {}
        for mount in container["volumeMounts"]:
            [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            source = volume["secret"]
            secret = harness.object(SECRETS, namespace, source["secretName"])
            assert secret is not None or source.get("optional"), source
            data = (secret or {}).get("data") or {}
            items = source.get("items") or [{"key": key, "path": key} for key in data]
            mounted = root / mount["mountPath"].lstrip("/")
            mounted.mkdir(parents=True, exist_ok=True)
            for item in items:
                (mounted / item["path"]).parent.mkdir(parents=True, exist_ok=True)
                (mounted / item["path"]).write_bytes(b64decode(data[item["key"]]))
            paths[mount["mountPath"]] = str(mounted)
        self.mounted = paths
        env: dict[str, str] = {}
        for var in container["env"]:
            if "value" in var:
                env[var["name"]] = var["value"]
                for path, local in paths.items():
                    env[var["name"]] = env[var["name"]].replace(path, local)
        env["MAS_REPLICA_ID"] = "worker-pod-1"  # the pod's name, from the downward API
        # The probes' listener binds the pod's address, here loopback, on a port free now (the
        # pod's own 9090 may be held by another process on this machine).
        assert env["MAS_METRICS_ADDRESS"].startswith("0.0.0.0:")
        env["MAS_METRICS_ADDRESS"] = f"127.0.0.1:{free_port()}"
        command = container["command"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = ChildProcess(
            sidecar_args(command[command.index("--agent-id") + 1], self.port),
            env=env,
            log_path=root / "sidecar.log",
        )

    async def __aenter__(self) -> PodSidecar:
        self.process.start()

        await eventually(self.ready, "the pod's sidecar ready")
        return self

    async def ready(self) -> bool:
        """Whether the sidecar answers ``/readyz`` with 200."""
        try:
            async with aiohttp.ClientSession() as http, http.get(self.url + "/readyz") as got:
                return got.status == 200
        except aiohttp.ClientConnectionError:  # not listening yet
            return False

    async def __aexit__(self, *exc: object) -> None:
        self.process.stop()


def agent_container_token(harness: OperatorHarness, deployment: dict[str, Any]) -> str:
    """The ``MAS_SIDECAR_TOKEN`` the kubelet gives the agent container (its secretKeyRef)."""
    agent = containers_of(deployment)["agent"]
    [ref] = [e["valueFrom"]["secretKeyRef"] for e in agent["env"] if e["name"] == TOKEN_ENV]
    secret = harness.object(SECRETS, deployment["metadata"]["namespace"], ref["name"])
    assert secret is not None
    return b64decode(secret["data"][ref["key"]]).decode()


A2A = {
    "expose": True,
    "port": 8791,
    "clients": [{"name": "partner", "secretKeyRef": {"name": "a2a-keys", "key": "partner"}}],
}


async def test_an_exposed_agent_gets_a_service_for_its_a2a_port_until_it_is_no_longer_exposed(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(AGENTS, agent_body(a2a=A2A))

    service = await eventually(lambda: harness.object(SERVICES, "team", "worker-a2a"))
    assert service["spec"]["ports"] == [
        {"name": "a2a", "port": 8791, "targetPort": "a2a", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "mas-agent", "mas.dev/agent": "worker"
    }  # fmt: skip
    assert service["metadata"]["ownerReferences"][0]["uid"] == "uid-team-worker"

    await harness.patch_spec(AGENTS, "team", "worker", {"a2a": {**A2A, "expose": False}})
    await eventually(lambda: harness.object(SERVICES, "team", "worker-a2a") is None)


async def test_the_agent_container_gets_the_token_its_sidecar_requires_and_mounts_nothing(
    harness: OperatorHarness, empty_redis: str, tmp_path: Path
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(AGENTS, agent_body())
    await harness.create(AGENTS, agent_body("other"))
    deployment = await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))
    other = await eventually(lambda: harness.object(DEPLOYMENTS, "team", "other"))

    agent = containers_of(deployment)["agent"]
    assert "volumeMounts" not in agent
    assert mounting_secrets(harness, "team") == {
        "worker": {"worker-mas-credentials", "worker-mas-remotes"},  # by the sidecar only
        "other": {"other-mas-credentials", "other-mas-remotes"},
    }
    token = agent_container_token(harness, deployment)
    other_token = agent_container_token(harness, other)
    assert token != other_token
    answers = {}
    async with (
        PodSidecar(harness, deployment, tmp_path) as sidecar,
        aiohttp.ClientSession() as http,
    ):
        for name, presented in (("own", token), ("other's", other_token), ("none", None)):
            headers = {"Authorization": authorization(presented)} if presented else {}
            async with http.get(sidecar.url + "/v1/self", headers=headers) as answer:
                answers[name] = (answer.status, (await answer.json()).get("error"))
    assert answers["own"] == (200, None)
    for name in ("other's", "none"):
        assert answers[name][0] == 401 and answers[name][1]["code"] == "unauthenticated_client"


async def test_agent_becomes_ready_and_policy_applied_with_a_real_sidecar(
    harness: OperatorHarness, empty_redis: str, tmp_path: Path
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(POLICIES, policy_body("open", rules=[{"name": "all", "action": "allow"}]))
    await harness.create(AGENTS, agent_body())
    await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))
    await harness.roll_out("team", "worker", replicas=1)
    ready = await eventually(
        lambda: (
            (c := condition(harness.object(AGENTS, "team", "worker"), "Ready"))
            and c["status"] == "True"
            and c
        )
    )
    assert ready["reason"] == "Available"
    pending = condition(harness.object(AGENTS, "team", "worker"), "PolicyApplied")
    assert pending is not None and pending["status"] == "False"

    # A sidecar started from the Secret, as the pod runs it, reports the revision.
    deployment = harness.object(DEPLOYMENTS, "team", "worker")
    assert deployment is not None
    async with PodSidecar(harness, deployment, tmp_path):
        applied = await eventually(
            lambda: (
                (c := condition(harness.object(AGENTS, "team", "worker"), "PolicyApplied"))
                and c["status"] == "True"
                and c
            )
        )
    agent = harness.object(AGENTS, "team", "worker")
    assert agent is not None
    revision = agent["status"]["policyRevision"]
    assert revision in applied["message"]
    policy = await eventually(
        lambda: (
            (p := harness.object(POLICIES, "team", "open"))
            and p["status"].get("enforcedBy") == 1
            and p
        )
    )
    assert policy["status"]["revision"] == revision
    assert policy["status"]["selectedAgents"] == 1
    assert agent["status"]["readyReplicas"] == 1


async def test_spec_changes_roll_the_pods_and_renew_the_token_but_scaling_only_scales(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(AGENTS, agent_body())
    first = await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))
    first_hash = first["spec"]["template"]["metadata"]["annotations"]["mas.dev/spec-hash"]
    first_token = secret_files(harness, "team", "worker")["token"]

    await harness.patch_spec(AGENTS, "team", "worker", {"roles": ["analyst", "reviewer"]})

    def renewed() -> bool:
        return secret_files(harness, "team", "worker")["token"] != first_token

    await eventually(renewed, what="a token with the new roles")
    files = secret_files(harness, "team", "worker")
    claims = parse_agent_credentials(
        anchor_public_keys(harness), files["agent.key"], files["token"]
    ).claims
    assert claims.roles == ("analyst", "reviewer")
    rolled = await eventually(
        lambda: (
            (d := harness.object(DEPLOYMENTS, "team", "worker"))
            and d["spec"]["template"]["metadata"]["annotations"]["mas.dev/spec-hash"] != first_hash
            and d
        )
    )
    env = {
        e["name"]: e.get("value")
        for c in rolled["spec"]["template"]["spec"]["containers"]
        for e in c["env"]
    }
    assert env["MAS_ROLES"] == "analyst,reviewer"
    rolled_hash = rolled["spec"]["template"]["metadata"]["annotations"]["mas.dev/spec-hash"]

    await harness.patch_spec(AGENTS, "team", "worker", {"replicas": 3})
    scaled = await eventually(
        lambda: (
            (d := harness.object(DEPLOYMENTS, "team", "worker"))
            and d["spec"]["replicas"] == 3
            and d
        )
    )
    assert scaled["spec"]["template"]["metadata"]["annotations"]["mas.dev/spec-hash"] == rolled_hash
    agent = await eventually(
        lambda: (
            (a := harness.object(AGENTS, "team", "worker"))
            and a["status"].get("observedGeneration") == 3
            and a
        )
    )
    assert condition(agent, "Ready")["observedGeneration"] == 3


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
async def test_deleting_an_agent_removes_its_acl_user_and_registry_entry(
    harness: OperatorHarness, empty_redis: str, policy: str
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(AGENTS, agent_body(deletionPolicy=policy))
    await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))
    admin = redis.Redis.from_url(empty_redis)
    try:
        assert acl_username("team/worker") in admin.acl_users()
        keys = AgentKeys("team/worker")
        admin.xadd(keys.inbox("team/other"), {"e": b"{}"})
        admin.hset(keys.state, "doc", "{}")
        admin.hset(keys.seen, "m1", "in:team/other 1-0")
        admin.hset("mas:{policy}:enforcers", "team/worker/pod-1", "r1")
        admin.set(audit_checkpoint("team/worker"), b"{}")
        await eventually(
            lambda: (
                "mas.dev/finalizer"
                in (harness.object(AGENTS, "team", "worker") or {})
                .get("metadata", {})
                .get("finalizers", [])
            )
        )

        await harness.delete(AGENTS, "team", "worker")

        await eventually(lambda: harness.object(AGENTS, "team", "worker") is None, what="gone")
        assert acl_username("team/worker") not in admin.acl_users()
        assert admin.hget(REGISTRY_AGENTS, "team/worker") is None
        assert admin.hget("mas:{policy}:enforcers", "team/worker/pod-1") is None
        remaining = sorted(k.decode() for k in admin.scan_iter(match=f"{keys.prefix}*"))
        if policy == "Delete":
            assert remaining == []
        else:
            assert remaining == sorted([keys.inbox("team/other"), keys.state, keys.seen])
        assert admin.exists(audit_checkpoint("team/worker")) == (policy != "Delete")
    finally:
        admin.close()


async def test_the_operator_checkpoints_audit_trails_archives_and_trims_past_retention(
    harness: OperatorHarness, empty_redis: str, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    harness.start(harness_config(empty_redis, audit_checkpoint_seconds=0.3, audit_archive=archive))
    await harness.create(POLICIES, policy_body("keep-200", audit={"retention": {"entries": 200}}))
    await harness.create(AGENTS, agent_body())
    admin = redis.Redis.from_url(empty_redis)
    keys, chain = AgentKeys("team/worker"), Chain("worker-0")
    try:
        with admin.pipeline(transaction=True) as pipe:  # all at once, as one batch of a sidecar
            for n in range(1500):
                pipe.xadd(keys.audit, chain.append({"decision": "accepted", "n": n}))
            pipe.hset(keys.audit_heads, chain.replica, chain.head_value)
            pipe.execute()

        def audit_status(**expected: Any) -> dict[str, Any] | None:
            worker = harness.object(AGENTS, "team", "worker") or {}
            found = dict((worker.get("status") or {}).get("audit") or {})
            return found if found and expected.items() <= found.items() else None

        kept = await eventually(lambda: audit_status(archivedEntries=1300), "1300 archived")
        out = io.StringIO()
        intact = verify_trail(
            admin, "team/worker", out, Evidence(anchor_public_keys(harness), archive)
        )

        assert (kept["intact"], kept["entries"]) == (True, 1500)
        assert "past the retention are archived, then trimmed" in kept["message"]
        assert admin.xlen(keys.audit) == 200
        assert intact, out.getvalue()
        assert "the entries before it read from 1 segment(s)" in out.getvalue()

        await eventually(lambda: harness.object(SECRETS, "team", "worker-mas-credentials"))
        worker = redis.Redis.from_url(secret_files(harness, "team", "worker")["redis-url"].decode())
        worker.xadd(keys.audit, {"x": "y"}, maxlen=0, approximate=False)  # its own user
        worker.close()
        broken = await eventually(lambda: audit_status(intact=False), "the trail found trimmed")

        assert "trimmed by someone else" in broken["message"]
        assert broken["checkpoint"] == kept["checkpoint"]  # the last good one stays
    finally:
        admin.close()


async def test_redis_down_is_reported_retried_and_blocks_deletion_until_it_is_back(
    harness: OperatorHarness, tmp_path: Path
) -> None:
    port, password = free_port(), generate_password()  # a server that comes and goes
    url = f"redis://:{password}@127.0.0.1:{port}"
    harness.start(harness_config(url))
    await harness.create(AGENTS, agent_body())
    down = await eventually(
        lambda: (
            (c := condition(harness.object(AGENTS, "team", "worker"), "RedisACLReady"))
            and c["status"] == "False"
            and c
        )
    )
    assert down["reason"] == "RedisUnavailable"
    assert harness.object(SECRETS, "team", "worker-mas-credentials") is None

    with RedisServer(port=port, password=password) as server:
        up = await eventually(
            lambda: (
                (c := condition(harness.object(AGENTS, "team", "worker"), "RedisACLReady"))
                and c["status"] == "True"
                and c
            )
        )
        assert up["reason"] == "UserApplied"
        assert harness.object(DEPLOYMENTS, "team", "worker") is not None
        # The policy it could not publish at start-up is published once Redis answers.
        admin = redis.Redis.from_url(server.url)
        await eventually(lambda: admin.get(POLICY_REVISION), what="the policy published")
        admin.close()

    await harness.delete(AGENTS, "team", "worker")
    await asyncio.sleep(2)
    stuck = harness.object(AGENTS, "team", "worker")
    assert stuck is not None, "the finalizer must hold the Agent while Redis is down"
    assert "mas.dev/finalizer" in stuck["metadata"]["finalizers"]

    with RedisServer(port=port, password=password) as server:
        await eventually(lambda: harness.object(AGENTS, "team", "worker") is None, what="gone")
        admin = redis.Redis.from_url(server.url)
        assert acl_username("team/worker") not in admin.acl_users()
        admin.close()


@pytest.mark.parametrize("append_only", [False, True], ids=["no-persistence", "append-only"])
@pytest.mark.parametrize("operator", ["running", "restarted-while-down"])
async def test_a_restarted_redis_is_provisioned_again_and_the_sidecar_recovers(
    harness: OperatorHarness, tmp_path: Path, operator: str, append_only: bool
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = RedisServer(
        os.environ.get("MAS_TEST_REDIS_SERVER"), append_only=append_only, data_dir=data
    )
    server.start()
    try:
        # Reconciles retry slowly: what comes back within seconds is the recovery's doing.
        config = harness_config(server.url, retry_seconds=600)
        harness.start(config)
        allow = [{"name": "all", "action": "allow"}]
        await harness.create(POLICIES, policy_body("open", rules=allow))
        await harness.create(AGENTS, agent_body())
        deployment = await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))
        async with PodSidecar(harness, deployment, tmp_path) as sidecar:
            assert server.process is not None
            if operator == "restarted-while-down":
                await harness.stop()
            server.process.kill()
            server.process.wait()
            if operator == "restarted-while-down":
                harness.start(harness_config(server.url, retry_seconds=0.5))

            async def down() -> bool:
                return not await sidecar.ready()

            await eventually(down, "the sidecar not ready while Redis is down")
            broke = time.monotonic()
            server.restart()
            await eventually(sidecar.ready, "the sidecar ready again")
            recovered = time.monotonic() - broke
        with redis.Redis.from_url(server.url) as admin:
            assert acl_username("team/worker") in admin.acl_users()
            assert admin.hexists(REGISTRY_AGENTS, "team/worker")
            assert admin.get(POLICY_REVISION) is not None
            assert admin.fcall("mas_version", 0) == VERSION.encode()

        def recoveries() -> float:
            value = harness.metrics.registry.get_sample_value("mas_operator_redis_recoveries_total")
            return value or 0.0

        if operator == "running":  # else the agent comes back through its resumed reconcile
            await eventually(recoveries, "provisioned again by the recovery (no reconcile ran)")
        # The operator's runner holds sys.stdout: the figures go to the real one (pytest -s).
        print(
            f"\nRECOVERY operator={operator} append_only={append_only} "
            f"ready_again_s={recovered:.2f} recoveries={recoveries():g}",
            file=sys.__stdout__,
        )
    finally:
        server.stop()


async def test_an_invalid_policy_keeps_its_last_good_version_in_force(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis))
    good_rules = [{"name": "ask", "action": "allow", "types": ["question.*"]}]
    await harness.create(POLICIES, policy_body("main", rules=good_rules))
    valid = await eventually(
        lambda: (
            (c := condition(harness.object(POLICIES, "team", "main"), "Valid"))
            and c["status"] == "True"
            and c
        )
    )
    admin = redis.Redis.from_url(empty_redis)
    try:
        good_revision = admin.get(POLICY_REVISION).decode()
        assert good_revision in valid["message"]
        assert b"question.*" in admin.get(POLICY_DOCUMENT)

        bad_dlp = {"custom": [{"name": "bad", "pattern": "(unclosed", "action": "block"}]}
        await harness.patch_spec(POLICIES, "team", "main", {"dlp": bad_dlp})
        invalid = await eventually(
            lambda: (
                (c := condition(harness.object(POLICIES, "team", "main"), "Valid"))
                and c["status"] == "False"
                and c
            )
        )
        assert "spec.dlp.custom[0].pattern" in invalid["message"]
        assert "last good version stays in force" in invalid["message"]
        policy = harness.object(POLICIES, "team", "main")
        assert policy is not None and "pattern" in policy["status"]["error"]
        assert admin.get(POLICY_REVISION).decode() == good_revision
        assert b"(unclosed" not in admin.get(POLICY_DOCUMENT)

        # A policy that was never valid is not in force; the others still publish.
        await harness.create(POLICIES, policy_body("typo", agents=["a/b/c"]))
        never = await eventually(
            lambda: (
                (c := condition(harness.object(POLICIES, "team", "typo"), "Valid"))
                and c["status"] == "False"
                and c
            )
        )
        assert "never valid" in never["message"]
        await harness.create(POLICIES, policy_body("more", rules=[{"name": "x", "action": "deny"}]))
        await eventually(
            lambda: admin.get(POLICY_REVISION).decode() != good_revision, what="a new revision"
        )
        document = admin.get(POLICY_DOCUMENT)
        assert b"team/more" in document and b"team/main" in document
        assert b"team/typo" not in document
        configmap = await eventually(
            lambda: (
                (m := harness.object(CONFIGMAPS, OPERATOR_NAMESPACE, "mas-gateway-policy"))
                and m["data"]["revision"] == admin.get(POLICY_REVISION).decode()
                and m
            )
        )
        assert "team/more" in configmap["data"]["policy.json"]

        # Deleting a policy recompiles without it.
        await harness.delete(POLICIES, "team", "more")
        await eventually(
            lambda: b"team/more" not in admin.get(POLICY_DOCUMENT), what="team/more unpublished"
        )
    finally:
        admin.close()


async def test_the_token_is_renewed_before_it_expires(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis, token_ttl_seconds=60))
    await harness.create(AGENTS, agent_body())
    await eventually(lambda: harness.object(SECRETS, "team", "worker-mas-credentials"))
    anchors = anchor_public_keys(harness)
    files = secret_files(harness, "team", "worker")
    first = parse_agent_credentials(anchors, files["agent.key"], files["token"]).claims
    assert first.exp - first.iat == 60

    # Renewal happens at half the lifetime: wait until past it, then see a fresh token.
    def renewed() -> Any:
        current = secret_files(harness, "team", "worker")
        claims = parse_agent_credentials(anchors, current["agent.key"], current["token"]).claims
        return claims.iat > first.iat and claims

    second = await eventually(renewed, "a renewed token")
    assert second.agent_kid == first.agent_kid, "the agent keeps its key"
    assert second.exp > first.exp
    agent = harness.object(AGENTS, "team", "worker")
    assert agent is not None
    expected = datetime.fromtimestamp(second.exp, UTC).isoformat().replace("+00:00", "Z")
    await eventually(
        lambda: (
            (harness.object(AGENTS, "team", "worker") or {})["status"]["tokenExpiresAt"] == expected
        )
    )
    assert time.time() - first.iat >= 30


async def test_a_deployment_or_secret_deleted_by_hand_comes_back(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(AGENTS, agent_body())
    await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))

    await harness.delete(DEPLOYMENTS, "team", "worker")
    await harness.delete(SECRETS, "team", "worker-mas-credentials")

    await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"), what="Deployment")
    await eventually(
        lambda: harness.object(SECRETS, "team", "worker-mas-credentials"), what="Secret"
    )
    files = secret_files(harness, "team", "worker")
    claims = parse_agent_credentials(
        anchor_public_keys(harness), files["agent.key"], files["token"], agent_id="team/worker"
    ).claims
    assert claims.roles == ("analyst",)
    assert f"//{acl_username('team/worker')}:" in files["redis-url"].decode()


async def test_hand_edits_of_the_deployment_and_secret_are_taken_back_and_others_kept(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(AGENTS, agent_body())
    built = await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))
    issued = await eventually(lambda: harness.object(SECRETS, "team", "worker-mas-credentials"))
    trust_key = next(key for key in issued["data"] if key.startswith("trust."))

    await harness.edit(
        DEPLOYMENTS,
        "team",
        "worker",
        {
            "metadata": {"labels": {"mas.dev/agent": "someone-else", "team": "blue"}},
            "spec": {
                "replicas": 5,
                "template": {"spec": {"containers": [{"name": "agent", "image": "evil:1"}]}},
            },
        },
    )
    await harness.edit(
        SECRETS,
        "team",
        "worker-mas-credentials",
        {
            "metadata": {"annotations": {"note": "kept"}},
            "data": {trust_key: b64encode(b"not the anchor").decode()},
        },
    )

    def taken_back() -> bool:
        deployment = harness.object(DEPLOYMENTS, "team", "worker") or {}
        secret = harness.object(SECRETS, "team", "worker-mas-credentials") or {}
        return (
            deployment.get("spec") == built["spec"]
            and secret.get("data") == issued["data"]
            and deployment["metadata"]["labels"]["mas.dev/agent"] == "worker"
        )

    await eventually(taken_back, what="the operator's fields applied again")
    deployment = harness.object(DEPLOYMENTS, "team", "worker")
    secret = harness.object(SECRETS, "team", "worker-mas-credentials")
    assert deployment is not None and secret is not None
    assert deployment["metadata"]["labels"]["team"] == "blue"
    assert secret["metadata"]["annotations"] == {"note": "kept"}
    assert "annotations" not in built["metadata"]


# -- what an Agent author may not get in a pod ---------------------------------------------------


def mounting_secrets(harness: OperatorHarness, namespace: str) -> dict[str, set[str]]:
    """Deployment name -> the Secrets its pods mount (as volumes or projected sources)."""
    mounted: dict[str, set[str]] = {}
    for (resource, ns, name), obj in harness.emulator.objects.items():
        if resource != DEPLOYMENTS or ns != namespace or obj.deleted:
            continue
        names: set[str] = set()
        for volume in obj.raw["spec"]["template"]["spec"].get("volumes") or ():
            if "secret" in volume:
                names.add(volume["secret"]["secretName"])
            for source in (volume.get("projected") or {}).get("sources") or ():
                if "secret" in source:
                    names.add(source["secret"]["name"])
        mounted[name] = names
    return mounted


async def settled_ready(harness: OperatorHarness, namespace: str, name: str) -> dict[str, Any]:
    """The Agent's Ready condition once the operator has handled the current generation."""
    return await eventually(
        lambda: (
            (agent := harness.object(AGENTS, namespace, name))
            and (c := condition(agent, "Ready"))
            and c["observedGeneration"] == agent["metadata"]["generation"]
            and c
        ),
        what=f"a Ready condition on {namespace}/{name}",
    )


HOSTILE_SPECS = {
    "another agent's credentials Secret": (
        {
            "volumes": [{"name": "loot", "secret": {"secretName": "victim-mas-credentials"}}],
            "volumeMounts": [{"name": "loot", "mountPath": "/loot"}],
        },
        "victim-mas-credentials",
    ),
    "the Secret in a projected volume": (
        {
            "volumes": [
                {
                    "name": "loot",
                    "projected": {
                        "sources": [
                            {"configMap": {"name": "harmless"}},
                            {"secret": {"name": "victim-mas-credentials"}},
                        ]
                    },
                }
            ],
            "volumeMounts": [{"name": "loot", "mountPath": "/loot"}],
        },
        "victim-mas-credentials",
    ),
    "another agent's external tokens": (
        {
            "volumes": [{"name": "loot", "secret": {"secretName": "victim-mas-remotes"}}],
            "volumeMounts": [{"name": "loot", "mountPath": "/loot"}],
        },
        "victim-mas-remotes",
    ),
    "the node's root filesystem": (
        {
            "volumes": [{"name": "node", "hostPath": {"path": "/"}}],
            "volumeMounts": [{"name": "node", "mountPath": "/host"}],
        },
        "MAS_ALLOW_HOST_PATH",
    ),
    "the node's network": ({"hostNetwork": True}, "MAS_ALLOW_HOST_NETWORK"),
    "the operator's service account": (
        {"serviceAccountName": "mas-operator"},
        "the operator's own service account",
    ),
}


@pytest.mark.parametrize(("spec", "words"), list(HOSTILE_SPECS.values()), ids=list(HOSTILE_SPECS))
async def test_a_hostile_agent_is_refused_and_gets_nothing(
    harness: OperatorHarness, empty_redis: str, spec: dict[str, Any], words: str
) -> None:
    harness.start(harness_config(empty_redis))
    namespace = OPERATOR_NAMESPACE if "serviceAccountName" in spec else "team"
    await harness.create(AGENTS, agent_body("victim", namespace))
    await eventually(lambda: harness.object(SECRETS, namespace, "victim-mas-credentials"))

    await harness.create(AGENTS, agent_body("thief", namespace, **spec))

    ready = await settled_ready(harness, namespace, "thief")
    assert (ready["status"], ready["reason"]) == ("False", "Forbidden")
    assert words in ready["message"]
    assert harness.object(DEPLOYMENTS, namespace, "thief") is None
    assert harness.object(SECRETS, namespace, "thief-mas-credentials") is None
    admin = redis.Redis.from_url(empty_redis)
    try:
        assert acl_username(f"{namespace}/thief") not in admin.acl_users()
    finally:
        admin.close()
    assert mounting_secrets(harness, namespace) == {
        "victim": {"victim-mas-credentials", "victim-mas-remotes"}
    }
    # A refused Agent still goes when deleted (its finalizer finds nothing to remove).
    await harness.delete(AGENTS, namespace, "thief")
    await eventually(lambda: harness.object(AGENTS, namespace, "thief") is None, what="gone")


async def test_a_refused_change_keeps_the_last_accepted_deployment(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(AGENTS, agent_body())
    accepted = await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))

    root = {
        "volumes": [{"name": "node", "hostPath": {"path": "/"}}],
        "volumeMounts": [{"name": "node", "mountPath": "/host"}],
    }
    await harness.patch_spec(AGENTS, "team", "worker", root)

    ready = await settled_ready(harness, "team", "worker")
    assert (ready["status"], ready["reason"]) == ("False", "Forbidden")
    assert "spec.volumes[0]" in ready["message"] and "last accepted" in ready["message"]
    current = harness.object(DEPLOYMENTS, "team", "worker")
    assert current is not None
    assert current["spec"]["template"] == accepted["spec"]["template"]
    assert "hostPath" not in repr(current)
    # The status timer leaves the refusal in place and builds nothing from the refused spec.
    await harness.delete(DEPLOYMENTS, "team", "worker")
    await asyncio.sleep(1)
    assert harness.object(DEPLOYMENTS, "team", "worker") is None
    assert condition(harness.object(AGENTS, "team", "worker"), "Ready")["reason"] == "Forbidden"


async def test_the_operator_settings_can_allow_the_host_network_and_host_paths(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis, allow_host_network=True, allow_host_path=True))
    spec = {
        "hostNetwork": True,
        "volumes": [{"name": "models", "hostPath": {"path": "/srv/models"}}],
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
    }
    await harness.create(AGENTS, agent_body(**spec))
    deployment = await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))
    pod = deployment["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert {"name": "models", "hostPath": {"path": "/srv/models"}} in pod["volumes"]


async def test_an_agent_does_not_take_over_a_deployment_it_does_not_own(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis))
    web = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "team", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.example/web:7"}]},
            },
        },
    }
    await harness.create(DEPLOYMENTS, web)

    await harness.create(AGENTS, agent_body("web"))

    taken = await settled_ready(harness, "team", "web")
    assert (taken["status"], taken["reason"]) == ("False", "NameTaken")
    assert "Deployment team/web" in taken["message"]
    current = harness.object(DEPLOYMENTS, "team", "web")
    assert current is not None
    assert current["spec"]["template"] == web["spec"]["template"]
    assert "ownerReferences" not in current["metadata"]


async def test_stricter_settings_after_a_restart_refuse_what_they_no_longer_allow(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis, allow_host_path=True))
    spec = {
        "volumes": [{"name": "models", "hostPath": {"path": "/srv/models"}}],
        "volumeMounts": [{"name": "models", "mountPath": "/models"}],
    }
    await harness.create(AGENTS, agent_body(**spec))
    await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))
    await harness.roll_out("team", "worker", replicas=1)
    await eventually(
        lambda: (
            (condition(harness.object(AGENTS, "team", "worker"), "Ready") or {}).get("status")
            == "True"
        )
    )
    await harness.stop()

    harness.start(harness_config(empty_redis))

    refused = await eventually(
        lambda: (
            (c := condition(harness.object(AGENTS, "team", "worker"), "Ready"))
            and c["reason"] == "Forbidden"
            and c
        )
    )
    assert "MAS_ALLOW_HOST_PATH" in refused["message"]
    # The status timer neither reports the old pods as Ready nor rebuilds the Deployment.
    await harness.delete(DEPLOYMENTS, "team", "worker")
    await asyncio.sleep(1)
    assert harness.object(DEPLOYMENTS, "team", "worker") is None
    assert condition(harness.object(AGENTS, "team", "worker"), "Ready")["reason"] == "Forbidden"


async def test_an_agent_does_not_adopt_a_credentials_secret_someone_else_planted(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis))
    port = redis.Redis.from_url(empty_redis).connection_pool.connection_kwargs["port"]
    planted_url = f"redis://{acl_username('team/worker')}:planted@127.0.0.1:{port}"
    planted = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "worker-mas-credentials", "namespace": "team"},
        "data": {"redis-url": b64encode(planted_url.encode()).decode()},
    }
    await harness.create(SECRETS, planted)

    await harness.create(AGENTS, agent_body())

    taken = await settled_ready(harness, "team", "worker")
    assert (taken["status"], taken["reason"]) == ("False", "NameTaken")
    assert "Secret team/worker-mas-credentials" in taken["message"]
    assert harness.object(DEPLOYMENTS, "team", "worker") is None
    planter = redis.Redis.from_url(planted_url)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            planter.ping()
    finally:
        planter.close()
    secret = harness.object(SECRETS, "team", "worker-mas-credentials")
    assert secret is not None and secret["data"] == planted["data"]


async def test_users_the_operator_creates_and_deletes_outlast_a_restart_of_a_redis_with_an_acl_file(
    harness: OperatorHarness, tmp_path: Path
) -> None:
    port, password, data = free_port(), generate_password(), tmp_path / "redis"
    data.mkdir(mode=0o700)
    binary = os.environ.get("MAS_TEST_REDIS_SERVER")

    def server() -> RedisServer:
        """The chart's embedded Redis on loopback: append-only file and ACL file kept."""
        return RedisServer(
            binary, port=port, password=password, append_only=True, acl_file=True, data_dir=data
        )

    with server():
        harness.start(harness_config(f"redis://:{password}@127.0.0.1:{port}"))
        await harness.create(AGENTS, agent_body())
        await eventually(
            lambda: (
                (c := condition(harness.object(AGENTS, "team", "worker"), "RedisACLReady"))
                and c["status"] == "True"
            )
        )
        url = secret_files(harness, "team", "worker")["redis-url"].decode()
    with server():
        agent = redis.Redis.from_url(url)  # its sidecar's user and password, as before
        assert agent.xlen(AgentKeys("team/worker").dlq) == 0
        agent.close()
        await harness.delete(AGENTS, "team", "worker")
        await eventually(lambda: harness.object(AGENTS, "team", "worker") is None, what="gone")
    with server() as restarted:
        admin = redis.Redis.from_url(restarted.url)
        assert acl_username("team/worker") not in admin.acl_users()
        admin.close()


LLM_KEY = "sk-live-never-in-a-log-0123456789"
WORKER_SERIES = {"agent_namespace": "team", "agent": "worker"}


async def test_a_secret_backed_api_key_reaches_the_agent_container_and_nothing_else(
    harness: OperatorHarness, empty_redis: str
) -> None:
    await harness.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "openai", "namespace": "team"},
            "data": {"api-key": b64encode(LLM_KEY.encode()).decode()},
        },
    )
    harness.start(harness_config(empty_redis))
    reference = {"secretKeyRef": {"name": "openai", "key": "api-key"}}
    await harness.create(
        AGENTS, agent_body(env=[{"name": "OPENAI_API_KEY", "valueFrom": reference}])
    )
    deployment = await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))
    containers = containers_of(deployment)
    assert {"name": "OPENAI_API_KEY", "valueFrom": reference} in containers["agent"]["env"]
    assert "openai" not in repr(containers["mas-sidecar"])
    await harness.roll_out("team", "worker", replicas=1)
    agent = await eventually(
        lambda: (
            (a := harness.object(AGENTS, "team", "worker"))
            and a["status"].get("readyReplicas") == 1
            and a
        )
    )
    # The kubelet resolves the reference: the operator never reads that Secret, so its value
    # can be in no status, log line or event of the operator.
    assert not [request for request in harness.emulator if request.name == "openai"]
    assert LLM_KEY not in repr(agent)
    assert LLM_KEY not in await harness.stop()


async def test_scaling_through_the_spec_reaches_the_deployment_and_the_status_reports_it(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(AGENTS, agent_body())
    await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))
    selector = "app.kubernetes.io/name=mas-agent,mas.dev/agent=worker"
    first = await eventually(
        lambda: (
            (a := harness.object(AGENTS, "team", "worker"))
            and a.get("status", {}).get("observedGeneration") == 1
            and a["status"]
        )
    )
    assert first["selector"] == selector  # from the first reconcile on

    async def scale(replicas: int) -> dict[str, Any]:
        """What the scale subresource writes (kubectl scale, an HPA, KEDA): spec.replicas; then
        the Deployment controller's part; the Agent's status once it reports it."""
        await harness.patch_spec(AGENTS, "team", "worker", {"replicas": replicas})
        await eventually(
            lambda: (
                (d := harness.object(DEPLOYMENTS, "team", "worker"))
                and d["spec"]["replicas"] == replicas
            )
        )
        await harness.roll_out("team", "worker", replicas=replicas)
        status: dict[str, Any] = await eventually(
            lambda: (
                (a := harness.object(AGENTS, "team", "worker"))
                and a["status"].get("readiness") == f"{replicas}/{replicas}"
                and a["status"]
            )
        )
        return status

    status = await scale(3)
    assert (status["replicas"], status["readyReplicas"], status["selector"]) == (3, 3, selector)
    stopped = await scale(0)
    assert (stopped["replicas"], stopped["readyReplicas"]) == (0, 0)


async def test_the_inbox_backlog_is_in_the_status_and_the_operators_gauges(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(AGENTS, agent_body())
    await eventually(
        lambda: (
            (a := harness.object(AGENTS, "team", "worker"))
            and a["status"].get("inbox") == {"messages": 0, "pending": 0, "oldestAgeSeconds": 0}
        )
    )
    # Scaled to zero, messages wait; the operator still sees them (no pod needed).
    admin = redis.Redis.from_url(empty_redis)
    keys = AgentKeys("team/worker")
    try:
        for sender in ("team/a", "team/b"):
            admin.sadd(keys.senders, sender)
            for n in range(3):
                admin.xadd(keys.inbox(sender), {"n": n})
            admin.xgroup_create(keys.inbox(sender), "mas", id="0")
    finally:
        admin.close()
    inbox = await eventually(
        lambda: (
            (a := harness.object(AGENTS, "team", "worker"))
            and (a["status"].get("inbox") or {}).get("messages") == 6
            and a["status"]["inbox"]
        )
    )
    assert inbox["pending"] == 0
    registry = harness.metrics.registry
    assert registry.get_sample_value("mas_agent_inbox_messages", WORKER_SERIES) == 6
    assert registry.get_sample_value("mas_agent_inbox_pending", WORKER_SERIES) == 0

    await harness.delete(AGENTS, "team", "worker")
    await eventually(lambda: harness.object(AGENTS, "team", "worker") is None, what="gone")
    assert registry.get_sample_value("mas_agent_inbox_messages", WORKER_SERIES) is None


async def test_dead_letters_policy_and_audit_of_each_agent_are_operator_gauges(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis, audit_checkpoint_seconds=0.3))
    await harness.create(AGENTS, agent_body())
    registry = harness.metrics.registry

    def gauge(name: str) -> float | None:
        return registry.get_sample_value(name, WORKER_SERIES)

    # No pod enforces the policy here (the emulator runs none); the empty trail is intact.
    assert await eventually(lambda: gauge("mas_agent_policy_applied") == 0)
    assert await eventually(lambda: gauge("mas_agent_audit_intact") == 1)
    assert await eventually(lambda: gauge("mas_agent_dead_letters") == 0)
    admin = redis.Redis.from_url(empty_redis)
    try:
        for n in range(2):
            admin.xadd(AgentKeys("team/worker").dlq, {"n": n})
    finally:
        admin.close()
    await eventually(lambda: gauge("mas_agent_dead_letters") == 2, what="two dead letters")

    await harness.delete(AGENTS, "team", "worker")
    await eventually(lambda: harness.object(AGENTS, "team", "worker") is None, what="gone")
    for name in ("mas_agent_dead_letters", "mas_agent_policy_applied", "mas_agent_audit_intact"):
        assert gauge(name) is None, name


async def test_every_metric_the_grafana_dashboard_and_the_alerts_query_is_exported(
    harness: OperatorHarness, redis_url: str, sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    """The PromQL of the chart's PrometheusRule and Grafana dashboard names only metrics that
    a real sidecar (after traffic) or the operator (reconciling an Agent) exports."""
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    await alice.send("bob", "job")
    [delivery] = await bob.collect(1, ack=False)
    assert await bob.answer(delivery["id"], "ack", {"handler_ms": 2}) == 204
    sidecar = await scrape(http, bob.base_url + "/metrics", **bob.headers)
    sender = await scrape(http, alice.base_url + "/metrics", **alice.headers)
    # Then the operator (it publishes its own policy, which allows nothing here).
    harness.start(harness_config(redis_url))
    await harness.create(AGENTS, agent_body())
    registry = harness.metrics.registry
    await eventually(
        lambda: registry.get_sample_value("mas_agent_policy_applied", WORKER_SERIES) is not None,
        what="the operator's per-agent gauges",
    )
    operator = Scrape(generate_latest(registry).decode())
    exported = sidecar.exported | sender.exported | operator.exported

    objects = rendered()
    queried = {name for expr in queries(objects) for name in metric_names(expr)}
    assert len(queried) >= 10, queried  # the parser found them
    assert queried - exported == set()
    assert {r["alert"] for r in alert_rules(objects)} == {
        "MasInboxBacklogGrowing", "MasDeadLettersRising", "MasAuditChainBroken",
        "MasPolicyNotApplied", "MasGatewayPolicyInvalid",
    }  # fmt: skip


# -- ExternalAgent ----------------------------------------------------------------------------

GLOSSARY_TOKEN_SECRET = {"name": "glossary-token", "key": "token"}
ASK_GLOSSARY = {"name": "ask-glossary", "action": "allow", "from": {"agents": ["team/worker"]},
                "to": {"agents": ["team/glossary"]}, "types": ["ask.*"]}  # fmt: skip


def external_body(name: str = "glossary", url: str = "http://127.0.0.1:1/", **spec: Any) -> Any:
    return {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "ExternalAgent",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"url": url, "capabilities": ["define"], "description": "Says what a word means.",
                 "credentials": {"secretKeyRef": GLOSSARY_TOKEN_SECRET}, **spec},
    }  # fmt: skip


def secret_body(name: str, data: dict[str, str], namespace: str = "team") -> dict[str, Any]:
    encoded = {key: b64encode(value.encode()).decode() for key, value in data.items()}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}, "data": encoded}  # fmt: skip


def remote_tokens(harness: OperatorHarness, agent: str) -> dict[str, str] | None:
    """The tokens in ``agent``'s remotes Secret, by file name (None: no Secret)."""
    secret = harness.object(SECRETS, "team", f"{agent}-mas-remotes")
    if secret is None:
        return None
    return {key: b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


def registered(harness: OperatorHarness, name: str = "glossary") -> dict[str, Any] | None:
    """The ExternalAgent's conditions by type once it is registered at its generation."""
    external = harness.object(EXTERNALS, "team", name)
    status = (external or {}).get("status") or {}
    if external is None or status.get("observedGeneration") != external["metadata"]["generation"]:
        return None
    return {c["type"]: c for c in status.get("conditions") or ()}


async def test_an_external_agent_is_in_discovery_and_its_token_reaches_only_its_callers(
    harness: OperatorHarness, empty_redis: str, remote: Remote, tmp_path: Path
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(SECRETS, secret_body("glossary-token", {"token": GLOSSARY_TOKEN}))
    await harness.create(POLICIES, policy_body("ask", rules=[ASK_GLOSSARY]))
    await harness.create(EXTERNALS, external_body(url=remote.url))
    await harness.create(AGENTS, agent_body())
    await harness.create(AGENTS, agent_body("other"))

    conditions = await eventually(lambda: registered(harness), "the glossary registered")
    assert conditions["Registered"]["status"] == "True"
    assert conditions["CredentialsReady"]["reason"] == "Found"
    assert GLOSSARY_TOKEN not in repr(harness.object(EXTERNALS, "team", "glossary"))
    admin = redis.Redis.from_url(empty_redis)
    entry = orjson.loads(admin.hget(REGISTRY_AGENTS, "team/glossary"))
    assert entry["external"] == remote.url and entry["capabilities"] == ["define"]

    # Only the sidecar of the agent the policy lets call it gets the token.
    await eventually(lambda: remote_tokens(harness, "worker") == {"team.glossary": GLOSSARY_TOKEN})
    await eventually(lambda: remote_tokens(harness, "other") == {})

    # The sidecar the pod runs finds it in discovery and calls it with the token.
    deployment = await eventually(lambda: harness.object(DEPLOYMENTS, "team", "worker"))
    token = agent_container_token(harness, deployment)
    async with PodSidecar(harness, deployment, tmp_path) as pod, aiohttp.ClientSession() as http:
        api = Api(http, pod, token=token)
        await api.wait_for_revision(admin.get(POLICY_REVISION).decode())
        status, agents = await api.call("GET", "/v1/agents")
        assert status == 200
        assert {"id": "team/glossary", "external": True}.items() <= next(
            a for a in agents["agents"] if a["id"] == "team/glossary"
        ).items()
        ask = {"to": "team/glossary", "type": "ask.define",
               "payload": {"text": "what is a sidecar"}, "timeout_ms": 20_000}  # fmt: skip
        status, reply = await api.call("POST", "/v1/requests", ask)
    assert status == 200, reply
    assert reply["payload"]["text"].startswith("sidecar: a process next to an agent")
    assert remote.calls == [("SendMessage", f"Bearer {GLOSSARY_TOKEN}")]

    # A rotated token reaches the sidecars; a policy that no longer allows the call takes it back.
    await harness.edit(SECRETS, "team", "glossary-token",
                       {"data": {"token": b64encode(b"rotated-token").decode()}})  # fmt: skip
    await eventually(lambda: remote_tokens(harness, "worker") == {"team.glossary": "rotated-token"})
    assert remote_tokens(harness, "other") == {}  # rounds later, still nothing
    await harness.patch_spec(POLICIES, "team", "ask", {"rules": []})
    await eventually(lambda: remote_tokens(harness, "worker") == {})

    # Deleted: out of discovery.
    await harness.delete(EXTERNALS, "team", "glossary")
    await eventually(lambda: admin.hget(REGISTRY_AGENTS, "team/glossary") is None)
    admin.close()


async def test_an_external_agent_cannot_have_an_agents_credentials_sent_to_its_url(
    harness: OperatorHarness, empty_redis: str
) -> None:
    # Whoever may write ExternalAgents names the victim's key as the "token" of a URL they own:
    # the operator would copy it into the callers' sidecars, which would send it there.
    harness.start(harness_config(empty_redis))
    await harness.create(POLICIES, policy_body("ask", rules=[ASK_GLOSSARY]))
    await harness.create(AGENTS, agent_body())
    await harness.create(AGENTS, agent_body("victim"))
    await eventually(lambda: harness.object(SECRETS, "team", "victim-mas-credentials"))
    loot = {"name": "victim-mas-credentials", "key": "agent.key"}
    await harness.create(EXTERNALS, external_body(credentials={"secretKeyRef": loot}))

    refused = await eventually(
        lambda: (c := condition(harness.object(EXTERNALS, "team", "glossary"), "Registered"))
        and c["status"] == "False" and c,
        "the ExternalAgent refused",
    )  # fmt: skip
    assert refused["reason"] == "Forbidden"
    assert "victim-mas-credentials" in refused["message"]
    await eventually(lambda: remote_tokens(harness, "worker") == {})
    admin = redis.Redis.from_url(empty_redis)
    assert admin.hget(REGISTRY_AGENTS, "team/glossary") is None
    admin.close()


async def test_a_missing_token_is_reported_and_reaches_the_senders_once_its_secret_exists(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(POLICIES, policy_body("ask", rules=[ASK_GLOSSARY]))
    await harness.create(AGENTS, agent_body())
    await harness.create(EXTERNALS, external_body())
    missing = await eventually(
        lambda: (c := (registered(harness) or {}).get("CredentialsReady")) and c,
        "CredentialsReady",
    )
    assert (missing["status"], missing["reason"]) == ("False", "SecretMissing")
    assert "no Secret glossary-token" in missing["message"]
    await eventually(lambda: remote_tokens(harness, "worker") == {})

    await harness.create(SECRETS, secret_body("glossary-token", {"token": GLOSSARY_TOKEN}))
    await eventually(lambda: remote_tokens(harness, "worker") == {"team.glossary": GLOSSARY_TOKEN})
    ready = await eventually(
        lambda: (c := (registered(harness) or {}).get("CredentialsReady"))
        and c["status"] == "True" and c,
        "CredentialsReady=True",
    )  # fmt: skip
    assert ready["reason"] == "Found"


async def test_an_external_agents_entry_a_server_lost_comes_back(
    harness: OperatorHarness, empty_redis: str
) -> None:
    harness.start(harness_config(empty_redis))
    await harness.create(EXTERNALS, external_body(credentials=None))
    conditions = await eventually(lambda: registered(harness), "the glossary registered")
    assert conditions["CredentialsReady"]["reason"] == "NoCredentials"
    admin = redis.Redis.from_url(empty_redis)
    await eventually(lambda: admin.hget(REGISTRY_AGENTS, "team/glossary"))
    admin.flushall()
    await eventually(lambda: admin.hget(REGISTRY_AGENTS, "team/glossary"))
    admin.close()


async def test_an_external_agent_named_like_an_agent_never_takes_its_messages(
    harness: OperatorHarness, empty_redis: str
) -> None:
    # Whoever may write ExternalAgents names one like an Agent: were its entry registered, every
    # message to the agent would go to their URL.
    harness.start(harness_config(empty_redis))
    await harness.create(AGENTS, agent_body())
    admin = redis.Redis.from_url(empty_redis)
    await eventually(lambda: admin.hget(REGISTRY_AGENTS, "team/worker"), "the agent registered")
    await harness.create(EXTERNALS, external_body("worker", credentials=None))
    taken = await eventually(
        lambda: (c := condition(harness.object(EXTERNALS, "team", "worker"), "Registered")) and c,
        "the ExternalAgent's Registered condition",
    )
    assert (taken["status"], taken["reason"]) == ("False", "NameTaken")
    assert "external" not in orjson.loads(admin.hget(REGISTRY_AGENTS, "team/worker"))

    # Deleting it leaves the agent's entry and lease alone.
    await harness.delete(EXTERNALS, "team", "worker")
    await eventually(lambda: harness.object(EXTERNALS, "team", "worker") is None)
    assert orjson.loads(admin.hget(REGISTRY_AGENTS, "team/worker"))["roles"] == ["analyst"]
    admin.close()
