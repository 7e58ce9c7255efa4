"""The baseline: the same traffic straight over redis-py asyncio Streams, no sidecar, no checks.

* :func:`one_way`: producers XADD the payload to one stream (each producer on its own
  connection), one consumer XREADGROUPs (up to 100 entries a read) and XACKs. *Unbatched*: one
  command per round trip, each awaited (what a central gateway making sequential Redis calls
  does). *Pipelined*: producers send 100 XADDs per pipeline, the consumer acks a whole read in
  one XACK.
* :func:`round_trip`: a requester XADDs to a request stream and blocks on its reply stream; a
  responder XREADGROUPs the request, XADDs the reply and XACKs — the raw Redis round trip of
  request/reply.

Used by :mod:`bench.cli`, with the payload of :mod:`bench.load`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from bench.load import payload

_STREAM = "bench:{raw}:stream"
_REQUESTS = "bench:{raw}:requests"
_REPLIES = "bench:{raw}:replies"
_GROUP = "g"
_PIPELINE = 100


def _client(url: str) -> Any:
    return aioredis.Redis.from_url(url)


async def _group(client: Any, key: str) -> None:
    await client.delete(key)
    with contextlib.suppress(redis.exceptions.ResponseError):
        await client.xgroup_create(key, _GROUP, id="0", mkstream=True)


async def one_way(url: str, producers: int, per_producer: int, *, pipelined: bool) -> float:
    """Messages per second from ``producers`` producers to one consumer."""
    admin = _client(url)
    await _group(admin, _STREAM)
    total = producers * per_producer
    consumer = _client(url)
    clients = [_client(url) for _ in range(producers)]
    body = [orjson.dumps(payload(seq)) for seq in range(per_producer)]

    async def consume() -> float:
        seen = 0
        while seen < total:
            answer = await consumer.xreadgroup(_GROUP, "c", {_STREAM: ">"}, count=100, block=1000)
            for _stream, entries in answer or ():
                ids = [entry_id for entry_id, _ in entries]
                if pipelined:
                    await consumer.xack(_STREAM, _GROUP, *ids)
                else:
                    for entry_id in ids:
                        await consumer.xack(_STREAM, _GROUP, entry_id)
                seen += len(ids)
        return time.perf_counter()

    async def produce(client: Any) -> None:
        if not pipelined:
            for data in body:
                await client.xadd(_STREAM, {"e": data})
            return
        for start in range(0, per_producer, _PIPELINE):
            async with client.pipeline(transaction=False) as pipe:
                for data in body[start : start + _PIPELINE]:
                    pipe.xadd(_STREAM, {"e": data})
                await pipe.execute()

    reader = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    await asyncio.gather(*(produce(client) for client in clients))
    finished = await reader
    for client in [admin, consumer, *clients]:
        await client.aclose()
    return total / (finished - started)


async def round_trip(url: str, requests: int) -> list[float]:
    """Seconds of each of ``requests`` sequential raw request/reply round trips."""
    admin = _client(url)
    await _group(admin, _REQUESTS)
    await admin.delete(_REPLIES)
    requester, responder = _client(url), _client(url)
    stop = asyncio.Event()

    async def respond() -> None:
        while not stop.is_set():
            answer = await responder.xreadgroup(_GROUP, "r", {_REQUESTS: ">"}, count=10, block=200)
            for _stream, entries in answer or ():
                for entry_id, fields in entries:
                    await responder.xadd(_REPLIES, {"e": fields[b"e"]})
                    await responder.xack(_REQUESTS, _GROUP, entry_id)

    task = asyncio.create_task(respond())
    last: bytes | str = "0-0"
    latencies: list[float] = []
    for seq in range(max(20, requests // 20) + requests):
        data = orjson.dumps(payload(seq))
        started = time.perf_counter()
        await requester.xadd(_REQUESTS, {"e": data})
        answer = None
        while not answer:
            answer = await requester.xread({_REPLIES: last}, count=1, block=1000)
        last = answer[0][1][0][0]
        if seq >= max(20, requests // 20):
            latencies.append(time.perf_counter() - started)
    stop.set()
    await task
    for client in (admin, requester, responder):
        await client.aclose()
    return latencies
