"""The SDK's coalescing of concurrent calls (``mas.coalesce``): many concurrent ``send`` and
``ack`` calls share batch requests, each call keeps its own result or error, and a client that
makes one call at a time uses the single-item endpoints only. Against real sidecars and Redis,
counting requests with the sidecar's own metrics."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest
import redis
from api import Api
from conftest import Sidecars
from tasks import counting_tasks
from test_sidecar_batch import pings_only

from mas.client import SidecarClient
from mas.coalesce import Coalescer
from mas.errors import DlpBlockedError, ForbiddenError, SidecarError
from mas_core.keys import AgentKeys

BOB = AgentKeys("default/bob")


async def requests_served(api: Api) -> dict[tuple[str, str], int]:
    """``(route, status)`` -> POST requests the sidecar answered so far."""
    async with api.session.get(api.base_url + "/metrics", headers=api.headers) as answer:
        text = await answer.text()
    counts: dict[tuple[str, str], int] = {}
    for route, status, value in re.findall(
        r'mas_http_requests_total\{method="POST",route="([^"]+)",status="(\d+)"\} ([0-9.e+]+)', text
    ):
        counts[(route, status)] = int(float(value))
    return counts


async def test_concurrent_sends_share_batch_requests_and_each_gets_its_own_id(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")

    async with SidecarClient(alice.base_url, token=alice.token) as client:
        ids = await asyncio.gather(*(client.send("bob", "ping", {"n": n}) for n in range(200)))

    served = await requests_served(alice)
    assert len(set(ids)) == 200
    assert redis_client.xlen(BOB.inbox("default/alice")) == 200
    assert served.get(("/v1/messages/batch", "200"), 0) >= 1
    assert served.get(("/v1/messages", "202"), 0) + served[("/v1/messages/batch", "200")] < 50


async def test_one_send_at_a_time_uses_the_single_send_endpoint_from_the_callers_task(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")

    async with SidecarClient(alice.base_url, token=alice.token) as client:
        await client.send("bob", "ping", {"n": -1})  # connected
        with counting_tasks() as tasks:
            for n in range(20):
                await client.send("bob", "ping", {"n": n})

    served = await requests_served(alice)
    assert served[("/v1/messages", "202")] == 21
    assert ("/v1/messages/batch", "200") not in served
    # No task of the SDK's: aiohttp writes a request's body from a task of its own (started
    # eagerly, without a turn of the loop, from Python 3.12 on), one per send.
    assert tasks.created == ["ClientRequest.write_bytes"] * 20 or len(tasks) == 0, tasks.created


async def test_each_coalesced_send_raises_the_error_a_single_send_would(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice, _ = await pings_only(sidecars, http, redis_client)
    sends: list[tuple[str, Any]] = [("ping", {"n": n}) for n in range(40)]
    sends[7] = ("shout", {"n": 7})
    sends[20] = ("ping", {"card": "4111 1111 1111 1111"})
    sends[33] = ("x" * 200, None)  # too long a type: the whole batch is refused, then resent

    async with SidecarClient(alice.base_url, token=alice.token) as client:
        results = await asyncio.gather(
            *(client.send("bob", type, payload) for type, payload in sends), return_exceptions=True
        )

    assert isinstance(results[7], ForbiddenError)
    assert isinstance(results[20], DlpBlockedError)
    assert isinstance(results[33], SidecarError) and results[33].code == "invalid_request"
    accepted = [r for r in results if isinstance(r, str)]
    assert len(accepted) == 37 == redis_client.xlen(BOB.inbox("default/alice"))


async def test_concurrent_acks_share_requests_and_an_unknown_id_still_raises(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    for n in range(60):
        await alice.send("bob", "ping", {"n": n})
    delivered = await bob.collect(60, ack=False)

    async with SidecarClient(bob.base_url, token=bob.token) as client:
        results = await asyncio.gather(
            *(client.ack(d["id"]) for d in delivered), client.ack("gone"), return_exceptions=True
        )

    served = await requests_served(bob)
    assert results[:60] == [None] * 60
    assert isinstance(results[60], SidecarError) and results[60].code == "delivery_not_found"
    assert redis_client.xlen(BOB.inbox("default/alice")) == 0
    assert served.get(("/v1/deliveries/ack", "200"), 0) >= 1
    assert served.get(("/v1/deliveries/{id}/ack", "204"), 0) < 60


async def test_a_call_cancelled_while_it_waits_is_not_sent() -> None:
    sent: list[list[int]] = []
    release = asyncio.Event()

    async def one(item: int) -> int:
        sent.append([item])
        await release.wait()
        return item

    async def many(items: list[int]) -> list[int | BaseException]:
        sent.append(items)
        return list(items)

    coalescer = Coalescer(one, many, max_batch=10, max_in_flight=1)
    first = asyncio.ensure_future(coalescer.call(0))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(coalescer.call(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    waiting[1].cancel()
    release.set()

    assert await first == 0
    assert [await waiting[0], await waiting[2]] == [1, 3]
    assert sent == [[0], [1, 3]]
    with pytest.raises(asyncio.CancelledError):
        await waiting[1]
