"""What an idle agent costs the server, counted in commands (never timed), and how a policy
reaches an idle sidecar: by its publication notice, or by the slow poll when the notice was
missed.

The cost test runs its own server, so that ``INFO commandstats`` counts only its sidecars, and
compares the commands counted over a measured window with a bound derived from the sidecar's
configured intervals (each loop runs at most once per interval, plus once at each end of the
window): a busy machine only makes loops run late, so it can lower the count, never raise it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from api import Api
from conftest import ALLOW_ALL, Sidecars
from policies import policy
from waiting import eventually

from mas import Agent, AgentMessage
from mas_cli.local.redis_server import RedisServer
from mas_control.provision import apply_acl_user, ensure_functions, publish_policy
from mas_core.acl import agent_redis_url, generate_password
from mas_core.keys import POLICY_CHANGES, POLICY_DOCUMENT, POLICY_REVISION
from mas_sidecar.config import SidecarConfig
from mas_sidecar.recovery import HEALTHY_PROBE_SECONDS
from mas_sidecar.redis_client import BLOCK_MS
from mas_sidecar.streams.inbox import REFRESH_SECONDS

WINDOW_SECONDS = 30.0  # a few times the longest interval below
EDGES = 8  # per sidecar: each loop may run once more at either end of the window


@pytest.fixture
def private_server() -> Iterator[RedisServer]:
    with RedisServer(os.environ.get("MAS_TEST_REDIS_SERVER")) as server:
        client = redis.Redis.from_url(server.url)
        ensure_functions(client)
        publish_policy(client, ALLOW_ALL)
        client.close()
        yield server


def calls(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}


def commands_a_second(sender_streams: int) -> float:
    """What the configured intervals allow one idle sidecar with a subscribed agent: the policy
    notice read and the revision poll, the reply read, the inbox read and its look at the
    senders set, a reclaim per sender stream every quarter lease, the discovery lease, the
    probe (two commands) and health-check PINGs on its two clients."""
    defaults = SidecarConfig(agent_id="default/x", port=0, redis_url="", replica="x")
    block = BLOCK_MS / 1000
    return (
        1 / block + 1 / (defaults.policy_poll_ms / 1000)
        + 1 / block
        + 1 / block + 1 / REFRESH_SECONDS
        + sender_streams / (defaults.lease_ms / 4000)
        + 1 / (defaults.registry_ttl_ms / 3000)
        + 2 / HEALTHY_PROBE_SECONDS
        + 2 / 15  # health_check_interval
    )  # fmt: skip


class Receiver(Agent):
    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.received: list[str] = []

    @Agent.on("hello")
    async def hello(self, message: AgentMessage) -> None:
        self.received.append(message.id)


async def test_an_idle_agent_costs_the_server_less_than_one_command_a_second(
    private_server: RedisServer, tmp_path: Path
) -> None:
    url = private_server.url
    admin = redis.Redis.from_url(url)
    factory = Sidecars(url, tmp_path / "logs", admin)
    agents: list[Agent[Any]] = []
    try:
        sidecars = {}
        for name in ("alice", "bob"):
            agent_id, password = f"default/{name}", generate_password()
            apply_acl_user(admin, agent_id, password)  # least privilege, as deployed
            sidecars[name] = await asyncio.to_thread(
                factory.start, agent_id, redis_url=agent_redis_url(url, agent_id, password)
            )
        alice = Receiver(sidecar_url=sidecars["alice"].url, sidecar_token=sidecars["alice"].token)
        bob = Agent(sidecar_url=sidecars["bob"].url, sidecar_token=sidecars["bob"].token)
        for agent in (alice, bob):
            await agent.start()
            agents.append(agent)
        # One message, so that alice reads a sender's stream (and reclaims on it) while idle.
        await bob.send("alice", "hello", {})
        await eventually(lambda: alice.received, "the message delivered")
        await asyncio.sleep(1)  # its ack

        before, started = calls(admin), time.monotonic()
        await asyncio.sleep(WINDOW_SECONDS)
        after, elapsed = calls(admin), time.monotonic() - started
    finally:
        for agent in agents:
            await agent.stop()
        factory.stop_all()

    counted = {name: n - before.get(name, 0) for name, n in after.items() if name != "info"}
    counted = {name: n for name, n in counted.items() if n}
    total = sum(counted.values())
    allowed = elapsed * (commands_a_second(1) + commands_a_second(0)) + 2 * EDGES
    assert commands_a_second(1) < 1, "the intervals allow one command a second or more"
    assert total <= allowed, f"{total} commands in {elapsed:.1f} s (allowed {allowed}): {counted}"
    assert counted.get("get", 0) <= 2 * (elapsed / 10 + 2), counted  # no revision polling


async def test_a_policy_reaches_an_idle_sidecar_by_its_notice(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    # It would read the revision again only after a day: only the notice can bring it.
    alice = Api(http, sidecars.start("default/alice", MAS_POLICY_POLL_MS="86400000"))
    await alice.wait_for_revision(ALLOW_ALL.revision)

    for rules in ([{"name": "nothing", "action": "deny"}], [{"name": "all", "action": "allow"}]):
        document = policy(rules=rules)
        publish_policy(redis_client, document)
        await alice.wait_for_revision(document.revision)

    notices = redis_client.xrange(POLICY_CHANGES)
    assert notices[-1][1][b"revision"] == document.revision.encode()


async def test_a_policy_whose_notice_was_missed_arrives_by_the_slow_poll(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice = Api(http, sidecars.start("default/alice", MAS_POLICY_POLL_MS="1000"))
    await alice.wait_for_revision(ALLOW_ALL.revision)
    notices = redis_client.xrange(POLICY_CHANGES)

    # Written as an older publisher would, with no notice; and the notices lost as well.
    document = policy(rules=[{"name": "nothing", "action": "deny"}])
    redis_client.set(POLICY_DOCUMENT, document.to_json())
    redis_client.set(POLICY_REVISION, document.revision)
    await alice.wait_for_revision(document.revision)
    assert redis_client.xrange(POLICY_CHANGES) == notices

    redis_client.delete(POLICY_CHANGES)
    again = policy(rules=[{"name": "all", "action": "allow"}])
    publish_policy(redis_client, again)  # on a new stream
    await alice.wait_for_revision(again.revision)


async def test_a_replica_looks_at_the_senders_set_once_a_lease_so_a_dead_peers_senders_are_found(
    private_server: RedisServer, tmp_path: Path
) -> None:
    # The ring wakes one replica for a new sender; when that replica dies, the others must know
    # the sender's stream by the time its leases run out, to reclaim them: each replica looks at
    # the senders set once a lease (here 1 s), not only every REFRESH_SECONDS.
    lease_seconds = 1.0
    assert lease_seconds * 3 < REFRESH_SECONDS
    admin = redis.Redis.from_url(private_server.url)
    factory = Sidecars(private_server.url, tmp_path / "logs", admin)
    try:
        await asyncio.to_thread(
            factory.start, "default/bob", MAS_LEASE_MS=str(int(lease_seconds * 1000))
        )
        before, started = calls(admin).get("smembers", 0), time.monotonic()
        await asyncio.sleep(4 * lease_seconds)  # the window in which its looks are counted
        looks, elapsed = calls(admin).get("smembers", 0) - before, time.monotonic() - started
    finally:
        factory.stop_all()
    # A busy machine only makes a look late, so fewer is possible, more is not; one every
    # REFRESH_SECONDS (the old interval) would give none in this window.
    assert 2 <= looks <= elapsed / lease_seconds + 2, f"{looks} looks in {elapsed:.1f} s"
