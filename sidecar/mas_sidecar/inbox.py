"""The receiving half of the Streams bridge: this replica's leases on the agent's inbox.

The inbox ``mas:{agent}:inbox`` has one consumer group; each replica is a consumer. Entries are read
only while an agent is subscribed and fewer than ``max_inflight`` are leased; at most
``max_subscribers`` delivery streams are open at once (each holds a connection and its buffers,
so their number bounds the memory they take). A read entry is
*leased*: it stays in the group's pending list until the agent acks it (XACK + XDEL, so acked
entries do not accumulate). An entry idle for longer than the lease — its replica died, or the agent
neither acked nor extended — is reclaimed with XAUTOCLAIM by any replica and delivered again with
``attempt`` = the stream's delivery count. A nack makes the entry reclaimable after its delay
(XCLAIM ... IDLE). Past ``max_attempts``, on expiry, on a malformed or misaddressed entry, when the
receive-side gateway check refuses it, or when the agent rejects it, the entry moves to the
dead-letter stream in the same MULTI as its XACK + XDEL, so nothing accepted is ever dropped.

Used by the delivery routes (subscribe, next, ack/nack/extend/reject) and the app (background
loops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
import redis.exceptions

from mas.envelope import Envelope, EnvelopeError
from mas.errors import ErrorCode
from mas.keys import CONSUMER_GROUP, AgentKeys
from mas_sidecar.aio import wait_event
from mas_sidecar.errors import ApiError
from mas_sidecar.metrics import Metrics

log = logging.getLogger(__name__)

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Fields a dead letter carries beside the original entry's own (kept whole, whatever it was).
DL_REASON, DL_ATTEMPTS, DL_FAILED_AT = b"dl:reason", b"dl:attempts", b"dl:failed_at"
_READ_BATCH = 100
_BLOCK_MS = 1000


@dataclass
class Lease:
    """One inbox entry leased to this replica."""

    entry_id: bytes
    envelope: Envelope
    deadline: float
    handed_out: bool = False
    replied: bool = False  # the agent answered it (a synchronous request takes one reply)


class Inbox:
    """Leases of one replica on its agent's inbox."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: AgentKeys,
        *,
        replica: str,
        lease_ms: int,
        max_attempts: int,
        max_inflight: int,
        max_subscribers: int,
        check: Callable[[list[tuple[Envelope, bytes]]], Awaitable[list[str | None]]],
        metrics: Metrics,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._replica = replica
        self.lease_ms = lease_ms
        self._max_attempts = max_attempts
        self._max_inflight = max_inflight
        self._max_subscribers = max_subscribers
        self._check = check
        self._metrics = metrics
        self.leases: dict[str, Lease] = {}
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._subscribers = 0
        self._wake = asyncio.Event()
        self._reclaim_now = asyncio.Event()
        self._cursor: bytes | str = "0-0"
        self._acks: list[tuple[bytes, asyncio.Future[None]]] = []
        self._acking: asyncio.Task[None] | None = None

    async def setup(self) -> None:
        """Create the consumer group (and the stream) if they do not exist yet."""
        try:
            await self._redis.xgroup_create(self._keys.inbox, CONSUMER_GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- subscribers ------------------------------------------------------------------------

    @contextlib.contextmanager
    def subscription(self) -> Iterator[None]:
        """While inside, this replica reads its inbox for the subscriber; ApiError
        ``too_many_subscribers`` when ``max_subscribers`` are subscribed already."""
        if self._subscribers >= self._max_subscribers:
            raise ApiError(
                ErrorCode.TOO_MANY_SUBSCRIBERS,
                f"this sidecar serves at most {self._max_subscribers} delivery streams at once "
                "(MAS_MAX_SUBSCRIBERS); one stream is enough to receive every delivery",
                {"Retry-After": "1"},
            )
        self._subscribers += 1
        self._metrics.subscribers.set(self._subscribers)
        self._wake.set()
        self._reclaim_now.set()
        try:
            yield
        finally:
            self._subscribers -= 1
            self._metrics.subscribers.set(self._subscribers)

    async def next_delivery(self) -> Envelope:
        """Wait for the next leased message to hand to a subscriber."""
        while True:
            envelope = self._hand_out(await self._ready.get())
            if envelope is not None:
                return envelope

    def ready_deliveries(self, limit: int) -> list[Envelope]:
        """Up to ``limit`` more leased messages that are ready now (without waiting), so a
        subscriber can take a burst in one write."""
        taken: list[Envelope] = []
        while len(taken) < limit and not self._ready.empty():
            envelope = self._hand_out(self._ready.get_nowait())
            if envelope is not None:
                taken.append(envelope)
        return taken

    def _hand_out(self, message_id: str) -> Envelope | None:
        lease = self.leases.get(message_id)
        if lease is None:
            return None
        lease.handed_out = True
        self._metrics.deliveries.inc()
        if lease.envelope.attempt > 1:
            self._metrics.redeliveries.inc()
        return lease.envelope

    def hand_back(self, envelope: Envelope) -> None:
        """A subscriber could not take ``envelope``: offer it to the next one."""
        lease = self.leases.get(envelope.id)
        if lease is not None:
            lease.handed_out = False
            self._ready.put_nowait(envelope.id)

    def _capacity(self) -> int:
        if not self._subscribers:
            return 0
        now = time.monotonic()
        active = sum(1 for lease in self.leases.values() if lease.deadline > now)
        return self._max_inflight - active

    # -- background loops -------------------------------------------------------------------

    async def read_until(self, stop: asyncio.Event) -> None:
        """Read new entries while there is a subscriber and room for more leases."""
        while not stop.is_set():
            capacity = self._capacity()
            if capacity <= 0:
                self._wake.clear()
                await wait_event(self._wake, 1)
                continue
            try:
                answer = await self._redis.xreadgroup(
                    CONSUMER_GROUP,
                    self._replica,
                    {self._keys.inbox: ">"},
                    count=min(capacity, _READ_BATCH),
                    block=_BLOCK_MS,
                )
                for _stream, entries in answer or ():
                    await self._lease([(entry_id, fields, 1) for entry_id, fields in entries])
            except REDIS_ERRORS as exc:
                await self._redis_failed("read", exc)

    async def reclaim_until(self, stop: asyncio.Event) -> None:
        """Take over entries whose lease ran out, wherever they were leased."""
        interval = min(self.lease_ms / 4000, 0.5)
        while not stop.is_set():
            self._reclaim_now.clear()
            await wait_event(self._reclaim_now, interval)
            self._forget_stale_leases()
            if self._capacity() <= 0:
                continue
            try:
                await self._reclaim_once()
            except REDIS_ERRORS as exc:
                await self._redis_failed("reclaim", exc)

    async def _reclaim_once(self) -> None:
        answer = await self._redis.xautoclaim(
            self._keys.inbox,
            CONSUMER_GROUP,
            self._replica,
            min_idle_time=self.lease_ms,
            start_id=self._cursor,
            count=self._capacity(),
        )
        self._cursor = answer[0]
        claimed = [(entry_id, fields) for entry_id, fields in answer[1] if fields is not None]
        if not claimed:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id, _fields in claimed:
                pipe.xpending_range(self._keys.inbox, CONSUMER_GROUP, entry_id, entry_id, 1)
            pending = await pipe.execute()
        await self._lease(
            [
                (entry_id, fields, int(info[0]["times_delivered"]))
                for (entry_id, fields), info in zip(claimed, pending, strict=True)
                if info  # else acked by its old holder in the meantime
            ]
        )

    def _forget_stale_leases(self) -> None:
        """Drop leases that ran out long ago (another replica has surely reclaimed them)."""
        horizon = time.monotonic() - self.lease_ms / 1000
        for message_id in [m for m, lease in self.leases.items() if lease.deadline < horizon]:
            del self.leases[message_id]
        self._metrics.inflight.set(len(self.leases))

    async def _redis_failed(self, loop: str, exc: Exception) -> None:
        self._metrics.redis_errors.labels(loop).inc()
        log.warning("inbox %s loop: Redis unavailable (%s); retrying", loop, exc)
        await asyncio.sleep(1)

    async def _lease(self, entries: list[tuple[bytes, dict[bytes, bytes], int]]) -> None:
        """Check entries read together (``(entry id, fields, attempt)``, in stream order), then
        lease each one that passes and dead-letter the others."""
        candidates: list[tuple[bytes, dict[bytes, bytes], Envelope]] = []
        for entry_id, fields, attempt in entries:
            try:
                envelope = Envelope.from_entry(fields, attempt)
            except EnvelopeError as exc:
                await self._dead_letter(entry_id, fields, f"malformed: {exc}", attempt)
                continue
            if envelope.target != self._keys.agent_id:
                await self._dead_letter(entry_id, fields, "misaddressed", attempt)
            elif attempt > self._max_attempts:
                await self._dead_letter(entry_id, fields, "max_attempts_exceeded", attempt - 1)
            elif envelope.is_expired(time.time_ns() // 1_000_000):
                await self._dead_letter(entry_id, fields, "expired", attempt - 1)
            else:
                candidates.append((entry_id, fields, envelope))
        if not candidates:
            return
        refusals = await self._check([(envelope, entry_id) for entry_id, _, envelope in candidates])
        for (entry_id, fields, envelope), refusal in zip(candidates, refusals, strict=True):
            if refusal:
                await self._dead_letter(entry_id, fields, refusal, envelope.attempt - 1)
                continue
            previous = self.leases.get(envelope.id)
            self.leases[envelope.id] = Lease(
                entry_id, envelope, time.monotonic() + self.lease_ms / 1000
            )
            if previous is None or previous.handed_out:
                self._ready.put_nowait(envelope.id)
        self._metrics.inflight.set(len(self.leases))

    # -- the agent's answers ----------------------------------------------------------------

    def _take(self, message_id: str) -> Lease:
        lease = self.leases.pop(message_id, None)
        if lease is None:
            raise ApiError(
                ErrorCode.DELIVERY_NOT_FOUND,
                f"delivery {message_id[:64]!r} is not leased to this sidecar "
                "(already answered, lease expired, or unknown)",
            )
        self._metrics.inflight.set(len(self.leases))
        self._wake.set()  # room for another lease: a reader waiting for capacity reads now
        return lease

    def lease(self, message_id: str) -> Lease:
        """A current lease; ApiError ``delivery_not_found`` otherwise."""
        lease = self.leases.get(message_id)
        if lease is None:
            raise ApiError(
                ErrorCode.DELIVERY_NOT_FOUND,
                f"delivery {message_id[:64]!r} is not leased to this sidecar",
            )
        return lease

    async def ack(self, message_id: str) -> None:
        """Done: XACK + XDEL in one MULTI, shared with the acks that arrive meanwhile."""
        lease = self._take(message_id)
        await self._queue_acks([lease.entry_id])
        self._metrics.acks.inc()

    async def ack_many(self, message_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Ack every delivery of ``message_ids`` that is leased here, in the same MULTI (with
        the acks that arrive meanwhile); ``(acked, unknown)`` ids, in the order given. An id
        given twice counts once; unknown ids (answered, expired or never leased) are only
        reported."""
        acked: list[str] = []
        unknown: list[str] = []
        entries: list[bytes] = []
        for message_id in dict.fromkeys(message_ids):
            lease = self.leases.pop(message_id, None)
            if lease is None:
                unknown.append(message_id)
                continue
            acked.append(message_id)
            entries.append(lease.entry_id)
        if entries:
            self._metrics.inflight.set(len(self.leases))
            self._wake.set()  # room for more leases: a reader waiting for capacity reads now
            await self._queue_acks(entries)
            self._metrics.acks.inc(len(entries))
        return acked, unknown

    async def _queue_acks(self, entries: Sequence[bytes]) -> None:
        """Queue ``entries`` for the next ack MULTI and wait until it went through."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.extend((entry_id, done) for entry_id in entries)
        if self._acking is None or self._acking.done():
            self._acking = asyncio.create_task(self._flush_acks())
        await done

    async def _flush_acks(self) -> None:
        """Send the queued acks, one MULTI (one XACK and one XDEL of all their entries) per
        round trip, until none is left."""
        while self._acks:
            batch, self._acks = self._acks, []
            entries = [entry_id for entry_id, _ in batch]
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.xack(self._keys.inbox, CONSUMER_GROUP, *entries)
                    pipe.xdel(self._keys.inbox, *entries)
                    await pipe.execute()
            except Exception as exc:  # each waiting request answers with it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def nack(self, message_id: str, delay_ms: int) -> None:
        """Make the entry reclaimable after ``delay_ms`` (at most one lease)."""
        lease = self._take(message_id)
        delay = min(delay_ms, self.lease_ms)
        await self._redis.xclaim(
            self._keys.inbox, CONSUMER_GROUP, self._replica, 0, [lease.entry_id],
            idle=self.lease_ms - delay, justid=True,
        )  # fmt: skip
        self._metrics.nacks.inc()
        self._cursor = "0-0"
        asyncio.get_running_loop().call_later(delay / 1000, self._reclaim_now.set)

    async def extend(self, message_id: str) -> None:
        """Start the lease again (the agent needs more time)."""
        lease = self.leases.get(message_id)
        if lease is None or lease.deadline < time.monotonic():
            self.leases.pop(message_id, None)
            raise ApiError(
                ErrorCode.DELIVERY_NOT_FOUND,
                f"delivery {message_id[:64]!r} is not leased to this sidecar, or its lease ran out",
            )
        await self._redis.xclaim(
            self._keys.inbox, CONSUMER_GROUP, self._replica, 0, [lease.entry_id], justid=True
        )
        lease.deadline = time.monotonic() + self.lease_ms / 1000

    async def reject(self, message_id: str, reason: str) -> None:
        """Dead-letter now, on the agent's word."""
        lease = self._take(message_id)
        await self._dead_letter(
            lease.entry_id, lease.envelope.to_entry(), f"rejected: {reason}", lease.envelope.attempt
        )

    async def release_all(self) -> int:
        """Make every lease reclaimable at once (clean shutdown: other replicas take over)."""
        entries = [lease.entry_id for lease in self.leases.values()]
        self.leases.clear()
        if entries:
            await self._redis.xclaim(
                self._keys.inbox, CONSUMER_GROUP, self._replica, 0, entries,
                idle=self.lease_ms, justid=True,
            )  # fmt: skip
        return len(entries)

    async def _dead_letter(
        self, entry_id: bytes, fields: dict[bytes, bytes], reason: str, attempts: int
    ) -> None:
        record = {
            **fields,
            DL_REASON: reason.encode()[:1024],
            DL_ATTEMPTS: str(attempts).encode(),
            DL_FAILED_AT: str(time.time_ns() // 1_000_000).encode(),
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._keys.dlq, record)
            pipe.xack(self._keys.inbox, CONSUMER_GROUP, entry_id)
            pipe.xdel(self._keys.inbox, entry_id)
            await pipe.execute()
        self._metrics.dead_letters.labels(reason.partition(":")[0]).inc()
        log.info("dead-lettered inbox entry %s: %s", entry_id.decode(), reason)
