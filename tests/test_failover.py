"""Failover under Sentinel: the primary is SIGKILLed while two sidecars exchange messages.

A primary, one replica and three sentinels run on loopback (:mod:`sentinels`); each agent's
sidecar connects through a ``redis+sentinel://`` URL with its own least-privilege ACL user,
which the test (as the control plane does) applies to every data node, since Redis does not
replicate ACL users. Four tasks send alice → bob as fast as the sidecar answers, bob acks every
delivery; after 200 accepted messages the primary is killed, the sentinels promote the replica,
the killed node comes back empty as a replica of the new primary, and sending goes on until
100 more messages were accepted. Each run once with the replica in sync, and once with the
replica lagging: SIGSTOPped before the kill while the primary accepts 300 more messages of
64 KiB (SIGCONTed as the primary dies), as a slow network or a busy replica would lag.

With ``MAS_REDIS_WAIT_REPLICAS=1`` (as many as there are replicas) every message that got a
202 is delivered. Without it, the primary may have acknowledged messages it never passed on:
the test counts them (a 202'd message neither delivered, nor left in bob's stream, nor
dead-lettered) and prints
the figure, for the README; it asserts no number, since it depends on timing. In both runs the
sidecars follow the new primary on their own.

Also here: what a Sentinel URL says, the operator applying ACL users to every data node, the
chart's ``mas redis-server --sentinels`` and ``mas redis-sentinel`` joining a running setup,
and the ``503 replication_timeout`` answer of a send that fewer replicas confirmed than asked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis
from api import Api
from conftest import ALLOW_ALL, Sidecars
from sentinels import SERVICE, LocalSentinels
from waiting import eventually

from mas_cli.local.processes import ChildProcess
from mas_cli.local.redis_server import free_port
from mas_cli.sentinel_command import follow_config
from mas_control.provision import apply_acl_user, ensure_functions, publish_policy
from mas_core import redis_clients, sentinel
from mas_core.acl import acl_username, agent_redis_url, generate_password, masked_url
from mas_core.envelope import ENTRY_FIELD
from mas_core.keys import AgentKeys
from mas_operator.config import OperatorConfig
from mas_operator.redis_admin import RedisAdmin

ALICE, BOB = "default/alice", "default/bob"
SENDERS = 4  # concurrent sends, so that some are in flight when the primary dies
BEFORE_KILL, AFTER_FAILOVER = 200, 100
# A lagging replica: it stops reading while the primary accepts LAG messages of PAYLOAD_BYTES
# (more than the loopback socket buffers hold, so some wait in the primary's memory), or, with
# WAIT, until LAG_REFUSALS sends were refused for want of a replica.
LAG, PAYLOAD_BYTES, LAG_REFUSALS = 300, 64 * 1024, 8
SMALL_PAYLOAD = "x" * 16
BACKOFF_SECONDS = 0.05  # between a refused send and the next try (pacing, not a wait)


def test_a_sentinel_url_names_the_sentinels_the_primary_and_the_data_nodes_user() -> None:
    url = "redis+sentinel://admin:p%40ss@s1:26380,s2,[::1]:26381/mas/2"
    assert sentinel.parse(url) == sentinel.SentinelTarget(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        service="mas",
        db=2,
        username="admin",
        password="p@ss",
    )
    assert sentinel.parse("rediss+sentinel://s/mas").tls
    agent = agent_redis_url(url, ALICE, "secret")
    assert agent == "redis+sentinel://mas-agent.default.alice:secret@s1:26380,s2,[::1]:26381/mas/2"
    assert masked_url(agent) == agent.replace(":secret@", ":***@")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h/0", "starts with redis\\+sentinel://"),
        ("redis+sentinel:///mas", "at least one sentinel"),
        ("redis+sentinel://s", "ends with /<primary name>"),
        ("redis+sentinel://s/mas/zero", "not a number"),
        ("redis+sentinel://s:port/mas", "not host:port"),
    ],
)
def test_a_malformed_sentinel_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sentinel.parse(url)


async def test_a_send_too_few_replicas_confirm_is_answered_503_and_may_still_arrive(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    waits = {"MAS_REDIS_WAIT_REPLICAS": "1", "MAS_REDIS_WAIT_TIMEOUT_MS": "20"}
    alice = Api(http, sidecars.start(ALICE, **waits))  # the server has no replica
    bob = Api(http, sidecars.start(BOB))
    message = {"to": "bob", "type": "note", "payload": 1}

    status, body = await alice.call("POST", "/v1/messages", message)
    assert status == 503, body
    assert body["error"]["code"] == "replication_timeout"
    assert "0 of 1 replicas" in body["error"]["message"]
    status, body = await alice.call("POST", "/v1/messages/batch", {"messages": [message]})
    assert status == 200
    assert [r["error"]["code"] for r in body["results"]] == ["replication_timeout"]

    assert [d["payload"] for d in await bob.collect(2)] == [1, 1]  # written all the same


@pytest.fixture
def setup() -> Iterator[LocalSentinels]:
    started = LocalSentinels(os.environ.get("MAS_TEST_REDIS_SERVER"), replicas=1)
    started.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def admin(setup: LocalSentinels) -> Iterator[redis.Redis]:
    client = redis_clients.client(setup.admin_url)
    ensure_functions(client)
    publish_policy(client, ALLOW_ALL)
    yield client
    client.close()


def test_the_operator_applies_an_agents_acl_user_on_every_data_node(
    setup: LocalSentinels,
) -> None:
    config = OperatorConfig.from_env(
        {"MAS_REDIS_URL": setup.url(), "MAS_REDIS_PASSWORD": setup.password}
    )
    admin = RedisAdmin(config.redis_url)
    user = acl_username("default/carol")

    def users() -> list[bool]:
        found = []
        for node in setup.nodes:
            with redis.Redis.from_url(node.url) as client:
                found.append(client.acl_getuser(user) is not None)
        return found

    try:
        admin.ensure_agent("default/carol", generate_password(), ["c"], [])
        assert users() == [True, True]
        admin.remove_agent("default/carol", delete_data=False)
        assert users() == [False, False]
    finally:
        admin.close()


def test_mas_redis_server_and_mas_redis_sentinel_join_the_nodes_the_sentinels_know(
    setup: LocalSentinels, tmp_path: Path
) -> None:
    sentinels = ",".join(f"127.0.0.1:{port}" for port in setup.sentinel_ports)
    port, sentinel_port = free_port(), free_port()
    common = ["--bind", "127.0.0.1", "--binary", setup.binary, "--sentinels", sentinels]
    common += ["--primary-name", SERVICE, "--initial-primary", "127.0.0.1"]
    env = {"MAS_REDIS_PASSWORD": setup.password}
    for directory in ("node", "sentinel"):
        (tmp_path / directory).mkdir()
    mas = [sys.executable, "-m", "mas_cli"]
    node = ChildProcess(
        [*mas, "redis-server", "--port", str(port), "--dir", str(tmp_path / "node"),
         "--announce", "127.0.0.1", *common],
        env=env, log_path=tmp_path / "node.log",
    )  # fmt: skip
    fourth = ChildProcess(
        [*mas, "redis-sentinel", "--port", str(sentinel_port), "--dir", str(tmp_path / "sentinel"),
         "--down-after-ms", "1000", *common],
        env=env, log_path=tmp_path / "sentinel.log",
    )  # fmt: skip
    primary = setup.primary_port()
    try:
        node.start()
        fourth.start()

        def replicating() -> bool:
            with (
                contextlib.suppress(redis.RedisError),
                redis.Redis(port=port, password=setup.password) as client,
            ):
                info = client.info("replication")
                return bool(info["master_port"] == primary and info["master_link_status"] == "up")
            return False

        def sentinel_joined() -> bool:
            with contextlib.suppress(redis.RedisError), redis.Redis(port=sentinel_port) as client:
                state = client.sentinel_masters()[SERVICE]
                return bool(state["port"] == primary and state["num-other-sentinels"] == 3)
            return False

        asyncio.run(eventually(replicating, "the new node replicating the primary"))
        asyncio.run(eventually(sentinel_joined, "the fourth sentinel monitoring the primary"))
        assert (tmp_path / "sentinel" / "sentinel.conf").stat().st_mode & 0o777 == 0o600

        empty = tmp_path / "empty"
        empty.mkdir()
        restarted = argparse.Namespace(
            sentinels=sentinels, primary_name=SERVICE, initial_primary="127.0.0.1",
            announce="127.0.0.1", port=primary, data_dir=empty,
        )  # fmt: skip
        with pytest.raises(ValueError, match="restarted without its data"):
            follow_config(restarted, setup.password)  # the primary, back before a failover
    finally:
        node.stop()
        fourth.stop()


def agent_url(setup: LocalSentinels, agent_id: str) -> str:
    """``agent_id``'s own URL, its ACL user applied to every data node (the control plane's
    job: ``ACL SETUSER`` is not replicated)."""
    password = generate_password()
    nodes = redis_clients.data_nodes(setup.admin_url)
    try:
        for node in nodes:
            apply_acl_user(node, agent_id, password)
    finally:
        for node in nodes:
            node.close()
    return setup.url(acl_username(agent_id), password)


@dataclass
class Traffic:
    """What alice's sidecar accepted, what bob's delivered, and every refusal's code."""

    alice: Api
    bob: Api
    payload: str
    accepted: set[str] = field(default_factory=set)
    delivered: set[str] = field(default_factory=set)
    refused: Counter[str] = field(default_factory=Counter)

    async def send_until(self, stop: asyncio.Event) -> None:
        count = 0
        while not stop.is_set():
            count += 1
            try:
                message = {"to": "bob", "type": "tick", "payload": [count, self.payload]}
                status, body = await self.alice.call("POST", "/v1/messages", message)
            except aiohttp.ClientError as exc:
                status, body = 0, {"error": {"code": type(exc).__name__}}
            if status == 202:
                self.accepted.add(body["id"])
            else:
                self.refused[body["error"]["code"]] += 1
                await asyncio.sleep(BACKOFF_SECONDS)

    async def receive_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, AssertionError):
                async with contextlib.aclosing(self.bob.deliveries()) as events:
                    async for event in events:
                        self.delivered.add(event["id"])
                        await self.bob.answer(event["id"], "ack")  # a failed ack redelivers
            await asyncio.sleep(BACKOFF_SECONDS)


@contextlib.asynccontextmanager
async def running(traffic: Traffic) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Senders and the receiver at work until the block ends; it gets a function that stops
    the senders (and returns once they stopped)."""
    stop_sending, stop_receiving = asyncio.Event(), asyncio.Event()
    senders = [asyncio.create_task(traffic.send_until(stop_sending)) for _ in range(SENDERS)]
    receiver = asyncio.create_task(traffic.receive_until(stop_receiving))

    async def stop_senders() -> None:
        stop_sending.set()
        await asyncio.gather(*senders)

    try:
        yield stop_senders
    finally:
        await stop_senders()
        stop_receiving.set()
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver


async def ready(api: Api) -> bool:
    status, _ = await api.call("GET", "/readyz")
    return status == 200


def message_ids(admin: redis.Redis, stream: str) -> set[str]:
    return {orjson.loads(fields[ENTRY_FIELD])["id"] for _, fields in admin.xrange(stream)}


def still_in_stream(admin: redis.Redis) -> set[str]:
    """Ids of the messages in alice's stream into bob (acked ones are trimmed away)."""
    return message_ids(admin, AgentKeys(BOB).inbox(ALICE))


def dead_lettered(admin: redis.Redis) -> set[str]:
    """Ids of bob's dead letters: not delivered, not silently dropped either (a slow receiver
    whose leases keep running out ends there)."""
    return message_ids(admin, AgentKeys(BOB).dlq)


@pytest.mark.parametrize(
    ("wait_replicas", "lagging"),
    [(1, False), (0, False), (1, True), (0, True)],
    ids=["wait", "no-wait", "wait-lagging-replica", "no-wait-lagging-replica"],
)
async def test_a_failover_loses_nothing_that_got_a_202_when_the_sidecar_waits_for_replicas(
    setup: LocalSentinels,
    admin: redis.Redis,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    *,
    wait_replicas: int,
    lagging: bool,
) -> None:
    sidecars = Sidecars(setup.admin_url, tmp_path / "logs", admin=admin)
    settings = {"MAS_REDIS_WAIT_REPLICAS": str(wait_replicas), "MAS_LEASE_MS": "5000"}
    try:
        alice = Api(http, sidecars.start(ALICE, redis_url=agent_url(setup, ALICE), **settings))
        bob = Api(http, sidecars.start(BOB, redis_url=agent_url(setup, BOB), **settings))
        traffic = Traffic(alice, bob, payload="x" * PAYLOAD_BYTES if lagging else SMALL_PAYLOAD)
        async with running(traffic) as stop_senders:
            await eventually(lambda: len(traffic.accepted) >= BEFORE_KILL, "messages accepted")
            killed = setup.primary_port()
            if lagging:  # the replica stops reading: what the primary accepts piles up
                [replica] = [node.port for node in setup.nodes if node.port != killed]
                setup.pause(replica)
                behind = len(traffic.accepted) + LAG
                await eventually(
                    lambda: (
                        len(traffic.accepted) >= behind
                        or traffic.refused["replication_timeout"] >= LAG_REFUSALS
                    ),
                    "sends while the replica lags",
                )
            setup.kill(killed)
            killed_at = time.monotonic()
            if lagging:
                setup.resume(replica)
                traffic.payload = SMALL_PAYLOAD  # big ones only to fill the buffers
            await eventually(lambda: setup.primary_port() != killed, "a replica promoted")
            # Written to the new primary again: accepted, or (until the old primary rejoins as
            # its replica, with WAIT on) refused with replication_timeout.
            written = len(traffic.accepted) + traffic.refused["replication_timeout"]
            await eventually(
                lambda: len(traffic.accepted) + traffic.refused["replication_timeout"] > written,
                "a send written to the new primary",
            )
            writing_again = time.monotonic() - killed_at
            await asyncio.to_thread(setup.rejoin, killed)
            resumed = len(traffic.accepted) + AFTER_FAILOVER
            await eventually(lambda: len(traffic.accepted) >= resumed, "sends after failover")
            await stop_senders()

            def undelivered() -> set[str]:
                return (traffic.accepted & still_in_stream(admin)) - traffic.delivered

            await eventually(lambda: not undelivered(), "every message left was delivered")
        dead = traffic.accepted & dead_lettered(admin)
        lost = traffic.accepted - traffic.delivered - dead
        print(
            f"\nfailover with MAS_REDIS_WAIT_REPLICAS={wait_replicas}, replica "
            f"{'lagging' if lagging else 'in sync'}: {len(traffic.accepted)} messages got a "
            f"202, {len(lost)} of them lost ({len(dead)} dead-lettered); refused meanwhile: "
            f"{dict(traffic.refused)}; sends written to the new primary {writing_again:.1f} s "
            f"after the kill"
        )
        if wait_replicas:
            assert not lost
        for api in (alice, bob):
            assert await ready(api)
    finally:
        sidecars.stop_all()
