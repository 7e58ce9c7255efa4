"""The replay guard against a real server: first sights, redeliveries, copies, the window; records
name the stream as well as the entry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from mas_core.audit.chain import verify
from mas_core.envelope import Envelope
from mas_core.ids import new_id
from mas_core.keys import CONSUMER_GROUP, AgentKeys
from mas_sidecar.checks.audit_log import AuditLog, receipt_event
from mas_sidecar.checks.replay import Read, ReplayError, ReplayGuard, entry_time_ms
from mas_sidecar.streams.writer import Writer

BOB = AgentKeys("team-b/bob")
ALICE = "team-a/alice"
STREAM = BOB.inbox(ALICE)
WINDOW_MS = 300_000


@pytest.fixture
async def guard(redis_url: str) -> AsyncIterator[ReplayGuard]:
    client = aioredis.Redis.from_url(redis_url)
    yield ReplayGuard(client, BOB, window_ms=WINDOW_MS)
    await client.aclose()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def envelope(created_at: int | None = None) -> Envelope:
    return Envelope(
        id=new_id(),
        sender=ALICE,
        target=BOB.agent_id,
        type="note",
        payload={"n": 1},
        created_at=now_ms() if created_at is None else created_at,
    )


def append(client: redis.Redis, message: Envelope, entry_id: str = "*") -> bytes:
    """Write ``message`` to Alice's stream into Bob as Alice (or whoever owns her sidecar)
    would."""
    entry: bytes = client.xadd(STREAM, message.to_entry(), id=entry_id)
    return entry


def read(message: Envelope, entry_id: bytes | str, stream: str = STREAM) -> Read:
    """``message`` as read from ``entry_id`` of ``stream``."""
    raw = entry_id if isinstance(entry_id, bytes) else entry_id.encode()
    return Read(message, stream, ALICE, raw)


async def test_a_fresh_message_passes(guard: ReplayGuard, redis_client: redis.Redis) -> None:
    message = envelope()
    await guard.check(read(message, append(redis_client, message)))

    assert redis_client.hlen(BOB.seen) == 1


async def test_a_redelivery_of_the_same_entry_passes_on_every_attempt(
    guard: ReplayGuard, redis_client: redis.Redis
) -> None:
    redis_client.xgroup_create(STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    message = envelope()
    append(redis_client, message)
    [[_stream, [(entry_id, _fields)]]] = redis_client.xreadgroup(
        CONSUMER_GROUP, "replica-1", {STREAM: ">"}
    )
    await guard.check(read(message, entry_id))

    for attempt in range(2, 6):  # nack or crash: another replica reclaims the same entry
        [claimed] = redis_client.xclaim(STREAM, CONSUMER_GROUP, f"replica-{attempt}", 0, [entry_id])
        redelivered = Envelope.from_entry(claimed[1], attempt=attempt)
        await guard.check(read(redelivered, claimed[0]))


async def test_the_same_envelope_re_injected_as_a_new_entry_is_refused(
    guard: ReplayGuard, redis_client: redis.Redis
) -> None:
    message = envelope()
    original = append(redis_client, message)
    await guard.check(read(message, original))
    copy = append(redis_client, message)

    with pytest.raises(ReplayError) as refused:
        await guard.check(read(message, copy))
    assert refused.value.reason == "duplicate"
    await guard.check(read(message, original))  # the original stays deliverable


async def test_a_copy_read_before_the_original_is_refused_once_either_was_accepted(
    guard: ReplayGuard, redis_client: redis.Redis
) -> None:
    message = envelope()
    first, second = append(redis_client, message), append(redis_client, message)
    await guard.check(read(message, second))

    with pytest.raises(ReplayError, match="duplicate"):
        await guard.check(read(message, first))


@pytest.mark.parametrize("offset_ms", [-WINDOW_MS - 1000, WINDOW_MS + 1000, -86_400_000])
async def test_a_message_created_outside_the_window_of_its_entry_is_refused(
    guard: ReplayGuard, redis_client: redis.Redis, offset_ms: int
) -> None:
    message = envelope(now_ms() + offset_ms)
    entry = append(redis_client, message)

    for _ in range(2):  # not recorded: a second look is no "redelivery"
        with pytest.raises(ReplayError) as refused:
            await guard.check(read(message, entry))
        assert refused.value.reason == "outside_window"
    assert redis_client.hlen(BOB.seen) == 0


async def test_a_message_that_waited_in_the_inbox_passes_but_a_late_copy_does_not(
    guard: ReplayGuard, redis_client: redis.Redis
) -> None:
    an_hour_ago = now_ms() - 3_600_000
    message = envelope(an_hour_ago + 200)
    queued = append(redis_client, message, f"{an_hour_ago}-0")  # appended an hour ago, read now
    await guard.check(read(message, queued))

    redis_client.delete(BOB.seen, BOB.seen_by_time)  # even once its record is gone
    with pytest.raises(ReplayError, match="outside_window"):
        await guard.check(read(message, append(redis_client, message)))


async def test_records_are_forgotten_by_stream_time_so_memory_stays_bounded(
    guard: ReplayGuard, redis_client: redis.Redis
) -> None:
    start = now_ms() - 10 * WINDOW_MS
    for n in range(50):
        at = start + n * WINDOW_MS // 4
        message = envelope(at)
        await guard.check(read(message, append(redis_client, message, f"{at}-0")))

    kept = redis_client.hlen(BOB.seen)
    assert kept <= 6  # about one window (four entries each) plus the entry being read
    assert redis_client.zcard(BOB.seen_by_time) == kept


async def test_a_replayed_dead_letter_is_the_entry_of_record(
    guard: ReplayGuard, redis_client: redis.Redis
) -> None:
    message = envelope(now_ms() - 3_600_000)
    dead_letter = redis_client.xadd(BOB.dlq, {**message.to_entry(), b"dl:reason": b"expired"})
    fields = {k: v for k, v in redis_client.xrange(BOB.dlq)[0][1].items() if b"dl:" not in k}

    entry = await guard.requeue(fields, message.id, ALICE, dead_letter_id=dead_letter.decode())

    assert redis_client.xlen(BOB.dlq) == 0
    [(stored_id, stored)] = redis_client.xrange(STREAM)
    assert (stored_id.decode(), stored) == (entry, message.to_entry())
    assert redis_client.sismember(BOB.senders, ALICE)  # found, even if the stream was gone
    assert [group["name"] for group in redis_client.xinfo_groups(STREAM)] == [b"mas"]
    await guard.check(read(message, entry))
    await guard.check(read(message, entry))
    with pytest.raises(ReplayError, match="duplicate"):
        await guard.check(read(message, append(redis_client, message)))


async def test_the_same_entry_id_in_another_stream_is_another_entry(
    guard: ReplayGuard, redis_client: redis.Redis
) -> None:
    message = envelope()
    entry = append(redis_client, message)
    await guard.check(read(message, entry))
    other = BOB.inbox("team-c/carol")
    redis_client.xadd(other, message.to_entry(), id=entry.decode())

    with pytest.raises(ReplayError, match=f"already delivered in in:{ALICE} {entry.decode()}"):
        await guard.check(read(message, entry, other))


def test_records_name_the_stream_after_the_agents_prefix_and_the_entry(redis_url: str) -> None:
    guard = ReplayGuard(aioredis.Redis.from_url(redis_url), BOB)

    assert guard.record(STREAM, b"1700000000123-7") == f"in:{ALICE} 1700000000123-7"
    assert entry_time_ms(b"1700000000123-7") == entry_time_ms("1700000000123-0") == 1700000000123


async def test_the_receipt_goes_with_the_check_only_when_every_entry_is_accepted(
    guard: ReplayGuard, redis_client: redis.Redis, redis_url: str
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    writer, stop = Writer(client), asyncio.Event()
    running = asyncio.create_task(writer.run_until(stop))
    audit = AuditLog(client, BOB, "replica-1", writer)
    await audit.setup()

    def trail() -> list[dict[bytes, bytes]]:
        return [fields for _, fields in redis_client.xrange(BOB.audit)]

    try:
        one, two = envelope(), envelope()
        reads = [read(one, append(redis_client, one)), read(two, append(redis_client, two))]
        errors, appended = await guard.check_and_receipt(reads, audit, receipt_event("b", []))
        assert (errors, appended) == ([None, None], True)
        assert len(trail()) == 1

        # A copy of ``one`` in the batch: nothing appended, the chain in memory taken back.
        three, head = envelope(), redis_client.hget(BOB.audit_heads, "replica-1")
        copy = read(one, append(redis_client, one))
        fresh = read(three, append(redis_client, three))
        errors, appended = await guard.check_and_receipt(
            [fresh, copy], audit, receipt_event("b", [])
        )
        assert errors[0] is None and isinstance(errors[1], ReplayError) and not appended
        assert errors[1].reason == "duplicate"
        assert len(trail()) == 1 and redis_client.hget(BOB.audit_heads, "replica-1") == head

        # Outside the window: refused, nothing appended; the record of ``three`` was kept.
        late = envelope(created_at=now_ms() - 2 * WINDOW_MS)
        errors, appended = await guard.check_and_receipt(
            [fresh, read(late, append(redis_client, late))], audit, receipt_event("b", [])
        )
        assert errors[0] is None and isinstance(errors[1], ReplayError) and not appended
        assert errors[1].reason == "outside_window"

        await audit.record(receipt_event("b", []))  # the next entry follows the last written
        report = verify(redis_client.xrange(BOB.audit), redis_client.hgetall(BOB.audit_heads))
        assert report.problems == [] and report.entries == 2
    finally:
        stop.set()
        await running
        await client.aclose()
