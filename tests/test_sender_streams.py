"""One stream per sender into each receiver: many senders to replicated receivers, reads that never
lease more than the room, redelivery and dead letters per stream, and a circuit breaker that
counts a sender's own backlog only.

Senders are real sidecars, or (to have many of them) the administrator appending to a sender's
stream as that sender's sidecar would (unsigned: the default test policy does not require
signatures); receivers are real sidecars, but for the reads, which are checked on the inbox
itself, in this process, against the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis
import redis.asyncio as aioredis
from api import Api
from conftest import Sidecars
from policies import publish
from streams import append_as
from waiting import GUARD_SECONDS, eventually

from mas_core.keys import CONSUMER_GROUP, AgentKeys
from mas_sidecar.checks.replay import Read
from mas_sidecar.metrics import Metrics
from mas_sidecar.streams.inbox import Inbox
from mas_sidecar.streams.outbox import build_envelope

BOB = AgentKeys("default/bob")


def raw_send(client: redis.Redis, sender: str, n: int) -> str:
    """A message from ``sender`` to bob, written as ``sender``'s sidecar writes it; its id."""
    envelope = build_envelope(sender=sender, target=BOB.agent_id, type="bulk", payload={"n": n})
    append_as(client, sender, BOB.agent_id, envelope.to_entry())
    return envelope.id


async def reads(api: Api, streams: int) -> bool:
    """Whether ``api``'s sidecar reads ``streams`` senders' streams."""
    return await api.sender_streams() == streams


async def consume(api: Api, into: list[dict[str, Any]]) -> None:
    """Ack every delivery of ``api``, then record it in ``into`` (so a delivery counted is acked:
    cancelling the consumer cannot cut off its ack), until cancelled."""
    async with contextlib.aclosing(api.deliveries()) as events:
        async for delivery in events:
            assert await api.answer(delivery["id"], "ack") == 204
            into.append(delivery)


async def test_many_senders_reach_two_replicas_with_little_room_and_nothing_is_lost(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    bobs = [
        Api(http, sidecars.start("default/bob", replica=f"bob-{n}", MAS_MAX_INFLIGHT="4"))
        for n in range(2)
    ]
    senders = [Api(http, sidecars.start(f"default/sender-{n}")) for n in range(3)]
    raw = [f"team/raw-{n}" for n in range(40)]  # more streams than room: read in windows
    sent = {raw_send(redis_client, name, 0) for name in raw}
    sent |= {await sender.send("bob", "bulk", {"n": 0}) for sender in senders}
    for bob in bobs:  # one replica looks at once, the other within seconds
        await eventually(lambda b=bob: reads(b, 43), "both read all 43 streams")
    received: list[list[dict[str, Any]]] = [[], []]
    consumers = [
        asyncio.create_task(consume(bob, into)) for bob, into in zip(bobs, received, strict=True)
    ]
    try:
        for n in range(1, 6):
            for sender in senders:
                sent.add(await sender.send("bob", "bulk", {"n": n}))
            for name in raw:
                sent.add(raw_send(redis_client, name, n))

        def delivered() -> set[str]:
            return {d["id"] for into in received for d in into}

        await eventually(lambda: delivered() >= sent, f"all {len(sent)} messages delivered")
    finally:
        for consumer in consumers:
            consumer.cancel()

    assert len(sent) == 6 * 43
    assert received[0] and received[1]
    for stream in [BOB.inbox(name) for name in raw]:
        assert redis_client.xlen(stream) == 0  # acked entries are deleted, stream by stream


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


async def accept_all(reads: list[Read]) -> list[str | None]:
    """The receive checks, passing everything (these tests are about reads and leases)."""
    return [None] * len(reads)


def bobs_inbox(client: aioredis.Redis, max_inflight: int) -> Inbox:
    """Bob's inbox as one replica's sidecar holds it, in this process, checks passing all."""
    return Inbox(
        client, BOB, replica="r-0", lease_ms=60_000, max_attempts=5, max_inflight=max_inflight,
        max_subscribers=1, check=accept_all, metrics=Metrics(),
    )  # fmt: skip


async def test_a_read_never_leases_more_than_the_room_and_what_it_gives_back_comes_again_first(
    client: aioredis.Redis, redis_client: redis.Redis
) -> None:
    senders = [f"team/s-{n}" for n in range(5)]
    for sender in senders:  # empty streams, listed: the inbox blocks on all five
        redis_client.xgroup_create(BOB.inbox(sender), CONSUMER_GROUP, id="0", mkstream=True)
        redis_client.sadd(BOB.senders, sender)
    inbox = bobs_inbox(client, max_inflight=2)
    await inbox.setup()
    stop = asyncio.Event()
    loops = [
        asyncio.create_task(inbox.read_until(stop)),
        asyncio.create_task(inbox.reclaim_until(stop)),
    ]

    def blocked() -> bool:
        return any(
            c["cmd"] == "xreadgroup" and "b" in c["flags"] for c in redis_client.client_list()
        )

    attempts: list[int] = []
    most = 0
    try:
        async with asyncio.timeout(GUARD_SECONDS):  # only against a hang
            with inbox.subscription():
                await eventually(blocked, "the read blocked on all five streams")
                with redis_client.pipeline(transaction=True) as pipe:  # five arrive at once
                    for sender in senders:
                        envelope = build_envelope(
                            sender=sender, target=BOB.agent_id, type="x", payload=0
                        )
                        pipe.xadd(BOB.inbox(sender), envelope.to_entry())
                    pipe.execute()
                while len(attempts) < len(senders):
                    envelope = await inbox.next_delivery()
                    most = max(most, len(inbox.leases))
                    attempts.append(envelope.attempt)
                    await inbox.ack(envelope.id)
    finally:
        stop.set()
        await asyncio.gather(*loops)

    assert most <= 2
    assert attempts == [1] * 5  # given back unread: a first delivery when taken again
    assert all(redis_client.xlen(BOB.inbox(sender)) == 0 for sender in senders)


@pytest.mark.parametrize("loss", ["group", "stream"])
async def test_a_stream_that_lost_its_group_or_was_deleted_is_read_again(
    client: aioredis.Redis, redis_client: redis.Redis, loss: str
) -> None:
    def send(sender: str) -> str:
        return raw_send(redis_client, sender, 0)

    inbox = bobs_inbox(client, max_inflight=10)
    first = send("team/s-0")
    await inbox.setup()
    stop = asyncio.Event()
    reading = asyncio.create_task(inbox.read_until(stop))
    try:
        async with asyncio.timeout(GUARD_SECONDS):  # only against a hang
            with inbox.subscription():
                assert (await inbox.next_delivery()).id == first
                await inbox.ack(first)
                if loss == "group":  # an operator's mistake, or a server that lost it
                    redis_client.xgroup_destroy(BOB.inbox("team/s-0"), CONSUMER_GROUP)
                else:
                    redis_client.delete(BOB.inbox("team/s-0"))
                later = [send("team/s-0"), send("team/s-1")]
                delivered = [(await inbox.next_delivery()).id for _ in later]
    finally:
        stop.set()
        await reading

    assert sorted(delivered) == sorted(later)


async def test_nacked_and_expired_leases_come_again_from_each_senders_stream(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    carol = Api(http, sidecars.start("default/carol"))
    bob = Api(http, sidecars.start("default/bob", MAS_LEASE_MS="1000"))
    nacked = await alice.send("bob", "job")
    expiring = await carol.send("bob", "job")

    async with contextlib.aclosing(bob.deliveries()) as events:
        first = {(d["id"], d["attempt"]) for d in [await anext(events), await anext(events)]}
        assert await bob.answer(nacked, "nack") == 204  # carol's: neither acked nor extended
        again = [await anext(events), await anext(events)]
        for delivery in again:
            assert await bob.answer(delivery["id"], "ack") == 204

    assert first == {(nacked, 1), (expiring, 1)}
    assert {(d["id"], d["attempt"]) for d in again} == {(nacked, 2), (expiring, 2)}
    for sender in ("default/alice", "default/carol"):
        assert redis_client.xlen(BOB.inbox(sender)) == 0
        assert redis_client.xpending(BOB.inbox(sender), CONSUMER_GROUP)["pending"] == 0


async def test_a_dead_letter_names_its_sender_and_is_replayed_into_its_stream(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    carol = Api(http, sidecars.start("default/carol"))
    bob = Api(http, sidecars.start("default/bob"))
    sent = await carol.send("bob", "typed", {"age": "x"})
    [delivery] = await bob.collect(1, ack=False)
    assert await bob.answer(delivery["id"], "reject", {"reason": "age"}) == 204

    [dead] = await bob.dead_letters()
    status, body = await bob.call("POST", f"/v1/dead-letters/{dead['id']}/replay")
    waiting = redis_client.xlen(BOB.inbox("default/carol"))  # nobody subscribed: it waits
    [again] = await bob.collect(1)

    assert (dead["sender"], dead["message"]["id"], dead["reason"]) == (
        "default/carol", sent, "rejected: age",
    )  # fmt: skip
    assert (status, body["id"], waiting) == (202, sent, 1)
    assert (again["id"], again["attempt"]) == (sent, 1)
    assert await bob.dead_letters() == []


async def test_a_senders_circuit_counts_its_own_backlog_not_another_senders_flood(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    document = publish(
        redis_client,
        rules=[{"name": "all", "action": "allow"}],
        circuitBreaker={"backlogThreshold": 3, "openSeconds": 60},
    )
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")  # not subscribed: everything sent waits
    await alice.wait_for_revision(document.revision)
    for n in range(50):
        raw_send(redis_client, "default/flood", n)

    statuses = [
        (await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"}))[0] for _ in range(5)
    ]

    assert statuses == [202, 202, 202, 202, 503]  # her own backlog: 4 > 3 opened it
