"""Batch endpoints: ``POST /v1/messages/batch`` (every item through the full send path, one
result each, in order) and ``POST /v1/deliveries/ack`` (many acks in one request), over real
sidecars, and the SDK's ``send_many`` / ``ack_many``."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import orjson
import redis
from api import Api
from conftest import Sidecars
from policies import publish

from mas.client import SidecarClient
from mas.errors import DlpBlockedError, ForbiddenError
from mas_core.audit.chain import verify
from mas_core.keys import AgentKeys

ALICE = AgentKeys("default/alice")
BOB = AgentKeys("default/bob")


def audit_events(client: redis.Redis, keys: AgentKeys) -> list[dict[str, object]]:
    return [orjson.loads(fields[b"e"]) for _, fields in client.xrange(keys.audit)]


async def pings_only(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> tuple[Api, Api]:
    """Alice's and Bob's sidecars under a policy that allows only pings and blocks card
    numbers, once Alice's enforces it."""
    document = publish(
        redis_client,
        rules=[{"name": "pings", "action": "allow", "types": ["ping"]}],
        dlp={"detectors": {"payment_card": "block"}},
    )
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    await alice.wait_for_revision(document.revision)
    return alice, bob


MIXED_BATCH = [
    {"to": "bob", "type": "ping", "payload": {"n": 0}},
    {"to": "bob", "type": "delete-all", "payload": {"n": 1}},
    {"to": "bob", "type": "ping", "payload": {"card": "4111 1111 1111 1111"}},
    {"to": "nobody", "type": "ping", "payload": {"n": 3}},
    {"to": "bob", "type": "ping", "payload": {"n": 4}, "correlation_id": "c-4"},
]


async def test_a_mixed_batch_answers_each_item_in_order_and_delivers_only_the_accepted_ones(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice, bob = await pings_only(sidecars, http, redis_client)

    status, body = await alice.call("POST", "/v1/messages/batch", {"messages": MIXED_BATCH})
    delivered = await bob.collect(2)

    assert status == 200
    results = body["results"]
    assert [r["status"] for r in results] == [202, 403, 422, 404, 202]
    assert [r.get("error", {}).get("code") for r in results] == [
        None, "forbidden", "dlp_blocked", "unknown_agent", None,
    ]  # fmt: skip
    assert "payment_card" in results[2]["error"]["message"]
    assert "4111" not in str(body)
    assert sorted(d["id"] for d in delivered) == sorted([results[0]["id"], results[4]["id"]])
    assert {d["id"]: d["correlation_id"] for d in delivered}[results[4]["id"]] == "c-4"
    assert redis_client.xlen(BOB.inbox(ALICE.agent_id)) == 0  # both acked, nothing else was written
    assert redis_client.xlen(BOB.dlq) == 0


async def test_every_batch_item_decision_is_audited_once(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice, _ = await pings_only(sidecars, http, redis_client)

    _, body = await alice.call("POST", "/v1/messages/batch", {"messages": MIXED_BATCH})

    events = audit_events(redis_client, ALICE)
    by_id = {e["message_id"]: e["decision"] for e in events}
    results = body["results"]
    assert Counter(e["decision"] for e in events) == {"accepted": 2, "denied": 1, "dlp_blocked": 1}
    assert by_id[results[0]["id"]] == by_id[results[4]["id"]] == "accepted"
    assert len(by_id) == len(events) == 4  # one entry per decision; the unknown target has none


async def test_a_malformed_batch_is_refused_naming_the_item_and_sends_nothing(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")
    good = {"to": "bob", "type": "ping"}

    bad_item = await alice.call(
        "POST", "/v1/messages/batch", {"messages": [good, good, {"to": "bob", "type": "a b"}]}
    )
    missing_field = await alice.call("POST", "/v1/messages/batch", {"messages": [good, {}]})
    not_a_list = await alice.call("POST", "/v1/messages/batch", {"messages": good})
    empty = await alice.call("POST", "/v1/messages/batch", {"messages": []})
    too_many = await alice.call("POST", "/v1/messages/batch", {"messages": [good] * 501})
    not_an_object = await alice.call("POST", "/v1/messages/batch", [good])

    assert bad_item[0] == 400 and bad_item[1]["error"]["code"] == "invalid_request"
    assert bad_item[1]["error"]["message"].startswith("messages[2].type:")
    assert missing_field[1]["error"]["message"].startswith("messages[1].to:")
    for status, body in (not_a_list, empty, too_many):
        assert (status, body["error"]["code"]) == (400, "invalid_request")
        assert body["error"]["message"].startswith("messages:")
    assert (not_an_object[0], not_an_object[1]["error"]["code"]) == (400, "invalid_json")
    assert redis_client.xlen(BOB.inbox(ALICE.agent_id)) == 0


async def test_batch_ack_removes_exactly_the_given_deliveries_and_reports_unknown_ids(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    for n in range(4):
        await alice.send("bob", "ping", {"n": n})
    delivered = await bob.collect(4, ack=False)
    ids = [d["id"] for d in delivered]

    status, body = await bob.call(
        "POST", "/v1/deliveries/ack", {"ids": [ids[0], "no-such-delivery", ids[2], ids[0]]}
    )
    again = await bob.call("POST", "/v1/deliveries/ack", {"ids": [ids[2]]})
    malformed = await bob.call("POST", "/v1/deliveries/ack", {"ids": []})

    assert (status, body) == (200, {"acked": [ids[0], ids[2]], "unknown": ["no-such-delivery"]})
    assert again == (200, {"acked": [], "unknown": [ids[2]]})
    assert (malformed[0], malformed[1]["error"]["code"]) == (400, "invalid_request")
    assert redis_client.xlen(BOB.inbox(ALICE.agent_id)) == 2
    assert await bob.answer(ids[1], "ack") == 204
    assert await bob.answer(ids[3], "ack") == 204
    assert redis_client.xlen(BOB.inbox(ALICE.agent_id)) == 0


async def test_the_sdk_sends_and_acks_in_batches(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice, bob = await pings_only(sidecars, http, redis_client)

    async with SidecarClient(alice.base_url, token=alice.token) as client:
        results = await client.send_many(
            [
                {"to": "bob", "type": "ping", "payload": 1},
                {"to": "bob", "type": "shout"},
                {"to": "bob", "type": "ping", "payload": "card 4111 1111 1111 1111"},
                {"to": "bob", "type": "ping", "payload": 2},
            ]
        )
    delivered = await bob.collect(2, ack=False)
    async with SidecarClient(bob.base_url, token=bob.token) as client:
        acked, unknown = await client.ack_many([d["id"] for d in delivered] + ["gone"])

    assert isinstance(results[0], str) and isinstance(results[3], str)
    assert isinstance(results[1], ForbiddenError) and results[1].status == 403
    assert isinstance(results[2], DlpBlockedError)
    assert sorted(acked) == sorted([results[0], results[3]])
    assert unknown == ["gone"]
    assert redis_client.xlen(BOB.inbox(ALICE.agent_id)) == 0


async def test_a_full_batch_of_500_is_accepted_and_delivered_whole(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")
    messages = [{"to": "bob", "type": "ping", "payload": {"n": n}} for n in range(500)]

    batches = await asyncio.gather(
        *(alice.call("POST", "/v1/messages/batch", {"messages": messages}) for _ in range(2))
    )

    for status, body in batches:
        assert status == 200
        assert {r["status"] for r in body["results"]} == {202}
    assert redis_client.xlen(BOB.inbox(ALICE.agent_id)) == 1000
    # The chain head is written once per pipeline, yet always names the last entry.
    trail = verify(redis_client.xrange(ALICE.audit), redis_client.hgetall(ALICE.audit_heads))
    assert trail.problems == [] and trail.entries == 1000
