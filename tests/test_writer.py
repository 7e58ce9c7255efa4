"""The sidecar's writer: concurrent submissions share one pipeline, in order; *latest* commands
go out once per pipeline with the last value, and every submitter of one gets its answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from mas_sidecar.writer import Writer


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_url)
    await connection.delete("w:stream", "w:head")
    yield connection
    await connection.delete("w:stream", "w:head")
    await connection.aclose()


async def calls(client: aioredis.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_latest_commands_run_once_per_pipeline_with_the_last_value(
    client: aioredis.Redis,
) -> None:
    writer = Writer(client)
    futures = [
        writer.submit(
            [("XADD", "w:stream", "*", "n", n)],
            {"head": ("HSET", "w:head", "r-0", n), "len": ("XLEN", "w:stream")},
        )
        for n in range(5)
    ]
    hset_before, xlen_before = await calls(client, "hset"), await calls(client, "xlen")
    stop = asyncio.Event()
    stop.set()  # drain what is queued (one pipeline), then return

    await writer.run_until(stop)

    hsets, xlens = (
        await calls(client, "hset") - hset_before,
        await calls(client, "xlen") - xlen_before,
    )
    answers = [await future for future in futures]
    assert [answer[1:] for answer in answers] == [[1, 5]] * 5  # HSET's answer, XLEN's answer
    assert (hsets, xlens) == (1, 1)
    assert await client.hget("w:head", "r-0") == b"4"
    assert await client.xlen("w:stream") == 5


async def test_submissions_without_latest_commands_get_only_their_own_answers(
    client: aioredis.Redis,
) -> None:
    writer = Writer(client)
    plain = writer.submit([("XADD", "w:stream", "*", "n", 0), ("XLEN", "w:stream")])
    keyed = writer.submit([("XADD", "w:stream", "*", "n", 1)], {"len": ("XLEN", "w:stream")})
    stop = asyncio.Event()
    stop.set()

    await writer.run_until(stop)

    first, second = await plain, await keyed
    assert first[1] == 1 and len(first) == 2
    assert second[1] == 2 and len(second) == 2
