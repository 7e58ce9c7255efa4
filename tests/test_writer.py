"""The sidecar's writer: concurrent submissions share one pipeline; the appends to one stream go
as one function call, in submission order; a sender's stream into a target lists the sender in
the target's senders set and rings its ring only the first time; a reply stream is written only
while it exists; *latest* commands go out once per pipeline with the last value; on a server
without the functions a write fails whole and writes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from tasks import counting_tasks

from mas_core.keys import AgentKeys
from mas_sidecar.redis_client import connect
from mas_sidecar.streams.writer import APPENDS_PER_CALL, Append, Discovery, Writer


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


async def calls(client: aioredis.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def drain(writer: Writer) -> None:
    stop = asyncio.Event()
    stop.set()  # write what is queued, then return
    await writer.run_until(stop)


async def test_appends_to_one_stream_share_a_call_and_keep_their_order(
    client: aioredis.Redis,
) -> None:
    writer = Writer(client)
    futures = [
        writer.submit(
            [
                Append("w:inbox", ("e", n), measure=True),
                Append("w:audit", ("n", n, "e", f"event {n}")),
            ],
            {"head": ("HSET", "w:head", "r-0", n)},
        )
        for n in range(5)
    ]
    before = {name: await calls(client, name) for name in ("fcall", "hset", "xadd")}

    await drain(writer)

    after = {name: await calls(client, name) - before[name] for name in before}
    answers = [await future for future in futures]
    # the inbox's length (asked for), the audit entries its call appended, HSET's answer
    assert answers == [[5, 5, 1]] * 5
    assert after == {"fcall": 2, "hset": 1, "xadd": 10}  # the XADDs ran inside the functions
    assert [f[b"e"] for _, f in await client.xrange("w:inbox")] == [b"0", b"1", b"2", b"3", b"4"]
    assert [f[b"n"] for _, f in await client.xrange("w:audit")] == [b"0", b"1", b"2", b"3", b"4"]
    assert await client.hget("w:head", "r-0") == b"4"


async def test_a_long_run_of_appends_is_split_into_calls_in_order(
    client: aioredis.Redis,
) -> None:
    writer = Writer(client)
    total = 2 * APPENDS_PER_CALL + 3
    futures = [writer.submit([Append("w:long", ("e", n), measure=True)]) for n in range(total)]

    await drain(writer)

    lengths = [(await future)[0] for future in futures]
    assert (
        lengths
        == [APPENDS_PER_CALL] * APPENDS_PER_CALL
        + [2 * APPENDS_PER_CALL] * APPENDS_PER_CALL
        + [total] * 3
    )
    stored = [int(f[b"e"]) for _, f in await client.xrange("w:long")]
    assert stored == list(range(total))


async def test_a_capped_stream_is_trimmed_to_about_its_cap(client: aioredis.Redis) -> None:
    writer = Writer(client)
    futures = [writer.submit([Append("w:capped", ("e", n), maxlen=10)]) for n in range(1000)]

    await drain(writer)

    await asyncio.gather(*futures)
    assert await client.xlen("w:capped") < 1000


async def test_on_a_server_without_the_functions_a_write_fails_and_writes_nothing(
    client: aioredis.Redis,
) -> None:
    writer = Writer(client)
    await client.function_flush()  # a replaced server the control plane has not provisioned yet
    future = writer.submit([Append("w:lost", ("e", 1), measure=True)])

    await drain(writer)

    with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)function not found"):
        await future
    assert await client.xlen("w:lost") == 0


async def test_a_failed_append_fails_only_the_submissions_of_its_call(
    client: aioredis.Redis,
) -> None:
    await client.set("w:not-a-stream", "x")
    writer = Writer(client)
    bad = writer.submit([Append("w:not-a-stream", ("e", 1))])
    good = writer.submit([Append("w:fine", ("e", 1), measure=True)])

    await drain(writer)

    with pytest.raises(Exception, match="WRONGTYPE"):
        await bad
    assert await good == [1]


async def test_a_senders_appends_list_it_once_and_ring_the_target_only_then(
    client: aioredis.Redis,
) -> None:
    bob = AgentKeys("default/bob")
    discovery = Discovery(bob.senders, bob.ring, "default/alice")
    writer = Writer(client)

    def send(n: int) -> asyncio.Future[list[object]]:
        stream = bob.inbox("default/alice")
        return writer.submit([Append(stream, ("e", n), measure=True, discovery=discovery)])

    first = send(0)
    await drain(writer)
    later = [send(n) for n in (1, 2)]
    await drain(writer)

    assert await first == [1]
    assert [await future for future in later] == [[3], [3]]  # one call: this sender's backlog
    assert await client.smembers(bob.senders) == {b"default/alice"}
    assert await client.xlen(bob.ring) == 1  # only when the sender was new


async def test_a_reply_goes_only_into_a_reply_stream_that_exists(client: aioredis.Redis) -> None:
    writer = Writer(client)
    gone = writer.submit([Append("w:replies:r-0:default/bob", ("e", 1), existing_only=True)])
    await client.xadd("w:replies:r-1:default/bob", {"created": 1}, maxlen=0, approximate=False)
    kept = writer.submit([Append("w:replies:r-1:default/bob", ("e", 1), existing_only=True)])

    await drain(writer)

    assert (await gone, await kept) == ([0], [1])  # entries appended
    assert not await client.exists("w:replies:r-0:default/bob")
    assert await client.xlen("w:replies:r-1:default/bob") == 1


async def test_final_commands_follow_the_latest_ones_and_answer_their_submitter(
    client: aioredis.Redis,
) -> None:
    writer = Writer(client)
    assert writer.idle
    first = writer.submit([Append("w:audit", ("n", 1))], {"head": ("HSET", "w:head", "r-0", 1)})
    assert not writer.idle
    second = writer.submit([], final=[("HSET", "w:head", "r-0", 2), ("HGET", "w:head", "r-0")])
    third = writer.submit([Append("w:audit", ("n", 3))], {"head": ("HSET", "w:head", "r-0", 3)})

    await drain(writer)

    # one pipeline: the appends (one call), the latest head (3), then the final commands
    assert await first == [2, 1] and await third == [2, 1]
    assert await second == [0, b"2"]
    assert await client.hget("w:head", "r-0") == b"2"
    assert writer.idle


async def test_a_lone_submission_wakes_the_idle_writer_without_a_task(redis_url: str) -> None:
    """No task between a submission and its pipeline, nor for the pipeline's commands (the
    sidecar's client, :func:`mas_sidecar.redis_client.connect`)."""
    client = connect(redis_url)
    writer = Writer(client)
    stop = asyncio.Event()
    running = asyncio.ensure_future(writer.run_until(stop))
    await writer.submit([Append("w:lone", ("e", "warm-up"))])
    with counting_tasks() as tasks:
        for n in range(50):  # each one alone: the writer is idle when it comes
            await writer.submit([Append("w:lone", ("e", n))])
    stop.set()
    writer.submit([])  # wakes the writer to see the stop
    await running
    assert len(tasks) == 0, tasks.created
    assert await client.xlen("w:lone") == 51
    await client.aclose()
