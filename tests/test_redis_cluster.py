"""Two sidecars exchange messages through a real three-shard Redis Cluster on loopback.

The agents' keys live in different slots (and most likely on different shards), so sends,
request/reply, deliveries, acks, dead letters and the replay guard's script all cross the
cluster; every gateway check is on (signing, DLP, a rate limit, audit).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis
from api import Api
from conftest import Sidecars
from policies import policy

from mas_control.provision import ensure_functions, publish_policy
from mas_core.audit.chain import verify
from mas_core.identity.credentials import create_anchor, issue_agent_credentials, load_anchor
from mas_core.keys import AgentKeys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cluster import LocalCluster, cluster_binary

pytestmark = pytest.mark.skipif(
    cluster_binary() is None, reason="no redis-server or valkey-server binary with cluster mode"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as running:
        yield running


@pytest.fixture
def cluster_sidecars(cluster: LocalCluster, tmp_path: Path) -> Iterator[Sidecars]:
    client = redis.RedisCluster.from_url(cluster.url)
    client.flushall()
    ensure_functions(client)
    publish_policy(
        client,
        policy(
            agents=["*"],
            rules=[{"name": "all", "action": "allow"}],
            rateLimits=[{"name": "high", "rate": 100000, "burst": 100000}],
            dlp={"enabled": True, "detectors": {"email": "redact", "us_ssn": "block"}},
            signing={"required": True},
        ),
    )
    factory = Sidecars(
        cluster.url.replace("redis://", "redis+cluster://"), tmp_path / "logs", admin=client
    )
    yield factory
    factory.stop_all()


def _credentials(tmp_path: Path, agent_id: str) -> str:
    anchor_dir = tmp_path / "anchor"
    anchor = load_anchor(anchor_dir) if anchor_dir.exists() else create_anchor(anchor_dir)
    directory = tmp_path / "creds" / agent_id.replace("/", "_")
    issue_agent_credentials(anchor, directory, agent_id=agent_id)
    return str(directory)


async def test_two_sidecars_exchange_messages_requests_and_acks_through_a_cluster(
    cluster: LocalCluster, cluster_sidecars: Sidecars, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        alice = Api(http, cluster_sidecars.start(
            "default/alice", MAS_CREDENTIALS_DIR=_credentials(tmp_path, "default/alice"),
        ))  # fmt: skip
        bob = Api(http, cluster_sidecars.start(
            "default/bob", capabilities=["echo"],
            MAS_CREDENTIALS_DIR=_credentials(tmp_path, "default/bob"),
        ))  # fmt: skip

        sent = [await alice.send("bob", "note", {"n": n, "who": "a@example.com"}) for n in range(5)]
        received = await bob.collect(5)
        assert [d["id"] for d in received] == sent
        assert received[0]["payload"] == {"n": 0, "who": "[REDACTED:email]"}
        assert received[0]["from"] == "default/alice"

        status, refused = await alice.call(
            "POST", "/v1/messages", {"to": "bob", "type": "note", "payload": "123-45-6789"}
        )
        assert status == 422, refused

        async def answer_one() -> None:
            async with contextlib.aclosing(bob.deliveries()) as deliveries:
                async for delivery in deliveries:
                    assert await bob.answer(delivery["id"], "reply", {"type": "pong", "payload": 7})
                    assert await bob.answer(delivery["id"], "ack") == 204
                    return

        responder = asyncio.create_task(answer_one())
        status, reply = await alice.call(
            "POST", "/v1/requests", {"to": "bob", "type": "ping", "payload": 1, "timeout_ms": 10000}
        )
        await responder
        assert status == 200, reply
        assert reply["type"] == "pong" and reply["payload"] == 7
        assert reply["from"] == "default/bob"

        await alice.send("bob", "to-reject")
        [delivery] = await bob.collect(1, ack=False)
        assert await bob.answer(delivery["id"], "reject", {"reason": "no"}) == 204
        status, body = await bob.call("GET", "/v1/dead-letters")
        assert status == 200
        assert [d["reason"] for d in body["dead_letters"]] == ["rejected: no"]

    client = redis.RedisCluster.from_url(cluster.url)
    try:
        bob = AgentKeys("default/bob")
        assert client.xlen(bob.inbox("default/alice")) == 0  # acked entries are deleted
        for agent in ("default/alice", "default/bob"):
            keys = AgentKeys(agent)
            report = verify(client.xrange(keys.audit), client.hgetall(keys.audit_heads))
            assert report.ok and report.entries > 0, report
    finally:
        client.close()
