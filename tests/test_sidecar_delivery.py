"""At-least-once delivery on Redis Streams: leases, redelivery, dead letters, trimming."""

from __future__ import annotations

import asyncio

import aiohttp
import redis
from api import Api
from conftest import Sidecars
from waiting import eventually

from mas_core.keys import AgentKeys

BOB = AgentKeys("default/bob")


async def test_an_unacked_delivery_comes_again_after_its_lease_with_attempt_2(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob", MAS_LEASE_MS="500"))
    message_id = await alice.send("bob", "work")

    first, second = await bob.collect(2, ack=False)

    assert first["id"] == second["id"] == message_id
    assert (first["attempt"], second["attempt"]) == (1, 2)


async def test_a_nacked_delivery_comes_again_after_its_delay(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    await alice.send("bob", "flaky")
    events = bob.deliveries()

    first = await anext(events)
    assert await bob.answer(first["id"], "nack", {"delay_ms": 300}) == 204
    loop = asyncio.get_running_loop()
    nacked_at = loop.time()
    second = await anext(events)

    assert second["id"] == first["id"]
    assert second["attempt"] == 2
    assert loop.time() - nacked_at >= 0.25
    await events.aclose()


async def test_extend_keeps_a_slow_delivery_from_being_redelivered(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob", MAS_LEASE_MS="1500"))
    await alice.send("bob", "long-job")
    seen: list[dict[str, object]] = []

    async def consume() -> None:
        async for delivery in bob.deliveries():
            seen.append(delivery)

    consumer = asyncio.create_task(consume())
    await eventually(lambda: seen, "the delivery")
    # Held for longer than one lease, renewed at a fifth of it (the margin is for a busy machine).
    for _ in range(7):
        await asyncio.sleep(0.3)
        assert await bob.answer(str(seen[0]["id"]), "extend") == 204
    assert await bob.answer(str(seen[0]["id"]), "ack") == 204
    await asyncio.sleep(1)
    consumer.cancel()

    assert len(seen) == 1, "an extended, then acked, delivery came again"


async def test_a_message_is_dead_lettered_after_max_attempts_and_can_be_replayed(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob", MAS_MAX_ATTEMPTS="3"))
    message_id = await alice.send("bob", "poison", {"bad": True})

    events = bob.deliveries()
    attempts = []
    for _ in range(3):
        delivery = await anext(events)
        attempts.append(delivery["attempt"])
        assert await bob.answer(delivery["id"], "nack") == 204

    [dead] = await eventually(bob.dead_letters, "the message dead-lettered")

    assert attempts == [1, 2, 3]
    assert dead["reason"] == "max_attempts_exceeded"
    assert dead["attempts"] == 3
    assert dead["message"]["id"] == message_id
    assert dead["message"]["payload"] == {"bad": True}

    status, replayed = await bob.call("POST", f"/v1/dead-letters/{dead['id']}/replay")
    assert (status, replayed["id"]) == (202, message_id)
    delivery = await anext(events)
    assert (delivery["id"], delivery["attempt"]) == (message_id, 1)
    assert await bob.answer(delivery["id"], "ack") == 204
    _, listing = await bob.call("GET", "/v1/dead-letters")
    assert listing["dead_letters"] == []
    await events.aclose()


async def test_a_rejected_delivery_is_dead_lettered_at_once_with_its_reason(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    await alice.send("bob", "typed", {"age": "not a number"})
    [delivery] = await bob.collect(1, ack=False)

    status = await bob.answer(delivery["id"], "reject", {"reason": "age: not an integer"})
    _, listing = await bob.call("GET", "/v1/dead-letters")

    assert status == 204
    [dead] = listing["dead_letters"]
    assert dead["reason"] == "rejected: age: not an integer"
    status, _ = await bob.call("DELETE", f"/v1/dead-letters/{dead['id']}")
    assert status == 204
    status, body = await bob.call("DELETE", f"/v1/dead-letters/{dead['id']}")
    assert (status, body["error"]["code"]) == (404, "dead_letter_not_found")


async def test_a_message_past_its_ttl_is_dead_lettered_not_delivered(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob_sidecar = sidecars.start("default/bob")
    bob = Api(http, bob_sidecar)
    await alice.send("bob", "stale", ttl_ms=50)
    fresh = await alice.send("bob", "fresh")
    await asyncio.sleep(0.2)

    [delivery] = await bob.collect(1)
    _, listing = await bob.call("GET", "/v1/dead-letters")

    assert delivery["id"] == fresh
    assert [d["reason"] for d in listing["dead_letters"]] == ["expired"]


async def test_acked_messages_are_removed_from_the_inbox(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    for n in range(50):
        await alice.send("bob", "bulk", {"n": n})
    assert redis_client.xlen(BOB.inbox("default/alice")) == 50

    await bob.collect(50)

    assert redis_client.xlen(BOB.inbox("default/alice")) == 0
    assert redis_client.xpending(BOB.inbox("default/alice"), "mas")["pending"] == 0


async def test_an_entry_that_is_not_an_envelope_is_dead_lettered_whole(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    redis_client.xadd(BOB.inbox("default/alice"), {"e": b"{not json", "extra": b"kept"})
    good = await alice.send("bob", "fine")

    [delivery] = await bob.collect(1)
    _, listing = await bob.call("GET", "/v1/dead-letters")

    assert delivery["id"] == good
    [dead] = listing["dead_letters"]
    assert dead["reason"].startswith("malformed")
    assert (dead["message"], dead["sender"]) == (None, "default/alice")  # whose stream it was
    [(_, fields)] = redis_client.xrange(BOB.dlq)
    assert fields[b"extra"] == b"kept"
    status, body = await bob.call("POST", f"/v1/dead-letters/{dead['id']}/replay")
    assert (status, body["error"]["code"]) == (400, "invalid_request")


async def test_a_message_tampered_in_redis_to_another_target_is_dead_lettered(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    sidecars.start("default/alice")
    carol = Api(http, sidecars.start("default/carol"))
    bob = Api(http, sidecars.start("default/bob"))
    await carol.send("alice", "for-alice")
    [(_, fields)] = redis_client.xrange(AgentKeys("default/alice").inbox("default/carol"))
    redis_client.xadd(BOB.inbox("default/carol"), fields)
    await carol.send("bob", "for-bob")

    [delivery] = await bob.collect(1)
    _, listing = await bob.call("GET", "/v1/dead-letters")

    assert delivery["type"] == "for-bob"
    assert [d["reason"] for d in listing["dead_letters"]] == ["misaddressed"]


async def test_a_stopped_replica_hands_its_leases_to_another_at_once(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    first_sidecar = sidecars.start("default/bob", replica="bob-0", MAS_LEASE_MS="60000")
    second = Api(http, sidecars.start("default/bob", replica="bob-1", MAS_LEASE_MS="60000"))
    first = Api(http, first_sidecar)
    events = first.deliveries()
    message_id = await alice.send("bob", "handover")
    leased = await anext(events)
    assert leased["id"] == message_id

    first_sidecar.stop()
    [delivery] = await second.collect(1)

    assert (delivery["id"], delivery["attempt"]) == (message_id, 2)


async def test_a_delivery_event_says_how_long_its_lease_is(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob", MAS_LEASE_MS="1234"))
    await alice.send("bob", "work")

    [delivery] = await bob.collect(1)

    assert delivery["lease_ms"] == 1234


async def test_batch_extend_renews_the_leases_held_and_reports_the_others(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob", MAS_LEASE_MS="1000"))
    sent = [await alice.send("bob", "work", {"n": n}) for n in range(3)]
    held = [delivery["id"] for delivery in await bob.collect(3, ack=False)]
    assert sorted(held) == sorted(sent)
    assert await bob.answer(held[2], "ack") == 204

    status, body = await bob.call(
        "POST", "/v1/deliveries/extend", {"ids": [held[0], "nonexistent", held[1], held[0]]}
    )

    assert status == 200
    assert body == {"extended": [held[0], held[1]], "unknown": ["nonexistent"]}
    assert await bob.metric("mas_lease_extensions_total") == 2
    status, body = await bob.call("POST", "/v1/deliveries/extend", {"ids": []})
    assert (status, body["error"]["code"]) == (400, "invalid_request")


async def test_extending_a_lease_that_ran_out_is_refused(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob", MAS_LEASE_MS="300"))
    await alice.send("bob", "work")
    [delivery] = await bob.collect(1, ack=False)  # and unsubscribed: nothing is reclaimed
    await asyncio.sleep(0.3)  # the lease runs out

    status, body = await bob.call("POST", "/v1/deliveries/extend", {"ids": [delivery["id"]]})
    single = await bob.call("POST", f"/v1/deliveries/{delivery['id']}/extend")

    assert (status, body) == (200, {"extended": [], "unknown": [delivery["id"]]})
    assert (single[0], single[1]["error"]["code"]) == (404, "delivery_not_found")


async def test_the_agent_records_completed_messages_for_a_while(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    bob = Api(http, sidecars.start("default/bob"))

    before = await bob.call("GET", "/v1/state/completed/m-1")
    recorded = await bob.call("PUT", "/v1/state/completed/m-1", {"ttl_ms": 60_000})
    after = await bob.call("GET", "/v1/state/completed/m-1")
    await bob.call("PUT", "/v1/state/completed/m-2", {"ttl_ms": 1})

    assert before == (200, {"id": "m-1", "completed": False})
    assert recorded == (204, None)
    assert after == (200, {"id": "m-1", "completed": True})
    assert 0 < redis_client.pttl(BOB.completed("m-1")) <= 60_000
    await eventually(
        lambda: not redis_client.exists(BOB.completed("m-2")), "the record of m-2 expired"
    )
    assert (await bob.call("GET", "/v1/state/completed/m-2"))[1]["completed"] is False
    status, body = await bob.call("PUT", "/v1/state/completed/m-3", {"ttl_ms": 0})
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert (await bob.call("GET", "/v1/state"))[1] == {"state": {}, "revision": 0}
