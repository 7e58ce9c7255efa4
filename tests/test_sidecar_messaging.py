"""Messages, requests and replies between agents, through real sidecars and a real Redis."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from api import Api
from conftest import Sidecars
from waiting import eventually


async def test_a_message_is_delivered_with_sender_type_and_payload(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))

    message_id = await alice.send("bob", "greeting", {"text": "hi", "nested": {"list": [1, 2]}})

    [delivery] = await bob.collect(1)
    assert delivery["id"] == message_id
    assert delivery["from"] == "default/alice"
    assert delivery["type"] == "greeting"
    assert delivery["payload"] == {"text": "hi", "nested": {"list": [1, 2]}}
    assert delivery["attempt"] == 1


async def test_a_bare_target_name_means_the_senders_namespace(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("team-a/alice"))
    sidecars.start("default/bob")
    team_bob = Api(http, sidecars.start("team-a/bob"))

    await alice.send("bob", "hello")
    await alice.send("default/bob", "cross-namespace")

    [delivery] = await team_bob.collect(1)
    assert delivery["type"] == "hello"


async def test_an_unregistered_target_is_refused_with_unknown_agent(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))

    status, body = await alice.call("POST", "/v1/messages", {"to": "nobody", "type": "x"})

    assert status == 404
    assert body["error"]["code"] == "unknown_agent"


async def test_messages_wait_in_the_inbox_until_the_target_runs(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob_sidecar = sidecars.start("default/bob")
    bob_sidecar.stop()

    sent = [await alice.send("bob", "queued", {"n": n}) for n in range(5)]

    bob_sidecar.start()
    delivered = await Api(http, bob_sidecar).collect(5)
    assert [d["id"] for d in delivered] == sent


async def test_a_request_returns_the_targets_reply(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))

    async def answer_one() -> None:
        async with contextlib.aclosing(bob.deliveries()) as deliveries:
            async for delivery in deliveries:
                await bob.answer(
                    delivery["id"], "reply", {"type": "sum", "payload": sum(delivery["payload"])}
                )
                await bob.answer(delivery["id"], "ack")
                return

    responder = asyncio.create_task(answer_one())
    status, reply = await alice.call(
        "POST", "/v1/requests", {"to": "bob", "type": "add", "payload": [1, 2, 3]}
    )
    await responder

    assert status == 200
    assert reply["from"] == "default/bob"
    assert reply["type"] == "sum"
    assert reply["payload"] == 6
    assert reply["correlation_id"]


async def test_a_request_without_reply_times_out_with_504_and_is_dead_lettered_as_expired(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))

    status, body = await alice.call(
        "POST", "/v1/requests", {"to": "bob", "type": "slow", "timeout_ms": 200}
    )
    assert status == 504
    assert body["error"]["code"] == "request_timeout"

    consumer = asyncio.create_task(bob.collect(1))  # subscribed, bob's sidecar reads its inbox
    [dead] = await eventually(bob.dead_letters, "the expired request dead-lettered")
    consumer.cancel()
    assert dead["reason"] == "expired"
    assert dead["message"]["type"] == "slow"


async def test_a_reply_to_a_plain_message_arrives_as_a_delivery_with_its_correlation_id(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    question = await alice.send("bob", "question", {"q": "?"})

    [delivery] = await bob.collect(1, ack=False)
    status, _ = await bob.call(
        "POST", f"/v1/deliveries/{delivery['id']}/reply", {"type": "answer", "payload": "!"}
    )
    assert status == 202
    assert await bob.answer(delivery["id"], "ack") == 204

    [reply] = await alice.collect(1)
    assert reply["type"] == "answer"
    assert reply["correlation_id"] == question
    assert reply["from"] == "default/bob"


async def test_each_reply_reaches_the_replica_that_asked(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice_replicas = [
        Api(http, sidecars.start("default/alice", replica=f"alice-{n}")) for n in range(2)
    ]
    bob = Api(http, sidecars.start("default/bob"))

    async def echo_forever() -> None:
        async for delivery in bob.deliveries():
            await bob.answer(
                delivery["id"], "reply", {"type": "echo", "payload": delivery["payload"]}
            )
            await bob.answer(delivery["id"], "ack")

    responder = asyncio.create_task(echo_forever())
    try:
        answers = await asyncio.gather(
            *(
                replica.call("POST", "/v1/requests", {"to": "bob", "type": "ask", "payload": n})
                for n, replica in enumerate(alice_replicas * 5)
            )
        )
    finally:
        responder.cancel()

    assert [status for status, _ in answers] == [200] * 10
    assert [reply["payload"] for _, reply in answers] == list(range(10))


async def test_replicas_of_one_agent_share_the_load(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bobs = [Api(http, sidecars.start("default/bob", replica=f"bob-{n}")) for n in range(2)]
    received: list[list[str]] = [[], []]

    subscribed = [asyncio.Event(), asyncio.Event()]

    async def consume(index: int) -> None:
        async for delivery in bobs[index].deliveries(subscribed[index]):
            received[index].append(delivery["id"])
            await asyncio.sleep(0.01)  # a little work, so one replica cannot take everything
            await bobs[index].answer(delivery["id"], "ack")

    consumers = [asyncio.create_task(consume(n)) for n in range(2)]
    await asyncio.gather(*(event.wait() for event in subscribed))
    sent = {await alice.send("bob", "hello")}
    await eventually(lambda: len(received[0]) + len(received[1]) == 1, "the first delivery")
    for bob in bobs:  # one replica looks at a new sender at once, the others within seconds
        await eventually(lambda bob=bob: bob.sender_streams(), "both replicas read alice's stream")
    sent |= {await alice.send("bob", "job", {"n": n}) for n in range(60)}
    await eventually(lambda: len(received[0]) + len(received[1]) == 61, "61 deliveries")
    for consumer in consumers:
        consumer.cancel()

    assert set(received[0]) | set(received[1]) == sent
    assert received[0] and received[1]
