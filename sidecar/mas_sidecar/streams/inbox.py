"""The receiving half of the Streams bridge: this replica's leases on its senders' streams.

Each sender writes its messages to this agent into a stream of its own,
``mas:{agent}:in:<sender>``, which only that sender's Redis user (and this agent's) may write
(:mod:`mas_core.acl`): a compromised sender can trim, future-date or flood its own stream, so its
own messages, and no other sender's. Every stream has one consumer group; each replica is a
consumer.

**Discovery.** A sender's append to a target (one ``mas_append`` call,
:mod:`mas_core.functions`) also adds the sender to the target's set ``mas:{agent}:senders`` and,
when it was not there, appends a content-free entry to the target's ``mas:{agent}:ring``. The
ring is read with the senders' streams, so one replica wakes at once: it acks and deletes the
ring entries and looks at the set; every replica also looks at it once a lease (at most every
``REFRESH_SECONDS``; a blocking read waits no longer than that), so when the replica that read a
sender's ring entry dies, the others know that sender's stream by the time its leases run out. A
new name must be an agent id, and is adopted with ``mas_adopt``: the group is created on its
stream when the stream exists, else the name is dropped from the set, so bogus names create
nothing. Nothing on the receive path uses ring entries or their ids: trimming or future-dating
the ring (any sender may append to it) only delays a new sender's discovery until the next look,
and loses nothing. When a read finds a stream without its group (deleted by hand, or evicted),
every stream is adopted again.

**Reading.** Entries are read only while an agent is subscribed and fewer than ``max_inflight``
are leased: one ``XREADGROUP`` over the ring and every sender's stream, each stream taking an
equal share of the room. With more streams than room, they are read in windows of as many
streams as there is room, one entry each, in rotation; only after a whole rotation found nothing
does one blocking read over all of them (on the blocking client, up to ``BLOCK_MS``) wait for
the next message (entries it returns beyond the
room are released at once, their delivery count set back, so they come again as first
deliveries). At most ``max_subscribers`` delivery streams to the agent are open at once (each
holds a connection and its buffers, so their number bounds the memory they take).

**Leases.** A read entry is *leased*: it stays in its stream's pending list until the agent acks
it (XACK + XDEL, so acked entries do not accumulate). An entry idle for longer than the lease —
its replica died, or the agent neither acked nor extended — is reclaimed with XAUTOCLAIM by any
replica and delivered again with ``attempt`` = the stream's delivery count. Each reclaim tick
visits at most ``RECLAIM_STREAMS`` streams, and no more than there is room for leases —
streams known to have entries due first (nacked, released, or reclaimed in full last time), at
most half of the tick, then the others in rotation —, so with room for at least
``RECLAIM_STREAMS`` leases a lease that ran out is taken over within the lease plus
``ceil(streams / (RECLAIM_STREAMS / 2))`` ticks of a quarter of the lease; a lease of this
replica's that runs out is taken over at the tick right after its end. (An idle agent costs the
server one ``XAUTOCLAIM`` per sender stream a quarter lease, so ticks are tied to the lease, not
to a fixed short time.) A nack makes the
entry reclaimable after its delay (XCLAIM ... IDLE). Past ``max_attempts``, on expiry, on a
malformed or misaddressed entry, when the receive-side gateway check refuses it (an envelope of
another sender than the stream's among others), or when the agent rejects it, the entry moves
to the dead-letter stream — with ``dl:sender``, whose stream it came from — in the same MULTI as
its XACK + XDEL, so nothing accepted is ever dropped.

Used by the delivery routes (subscribe, next, ack/nack/extend/reject), the dead-letter store
(which sender a dead letter came from) and the app (background loops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import redis.exceptions

from mas_core.dead_letters import DL_ATTEMPTS, DL_FAILED_AT, DL_REASON, DL_SENDER
from mas_core.envelope import Envelope, EnvelopeError
from mas_core.error_codes import ErrorCode
from mas_core.keys import CONSUMER_GROUP, AgentKeys
from mas_core.names import InvalidAgentIdError, qualify
from mas_core.telemetry.logs import message_fields
from mas_core.telemetry.tracing import NO_TRACER, Tracer, message_attributes
from mas_sidecar.aio import wait_event
from mas_sidecar.checks.replay import Read
from mas_sidecar.errors import Refusal
from mas_sidecar.metrics import Metrics
from mas_sidecar.redis_client import BLOCK_MS
from mas_sidecar.streams.errors import REDIS_ERRORS

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30.0  # every replica looks at the senders set this often, or once a lease
EXPIRY_MARGIN_SECONDS = 0.25  # after one of its own leases ran out, reclaim this much later
RECLAIM_STREAMS = 128  # streams one reclaim tick visits, at most
ADOPT_PER_CALL = 256  # new senders per ``mas_adopt`` call
_READ_BATCH = 100

Entry = tuple[str, bytes, dict[bytes, bytes], int]  # stream, entry id, fields, attempt


@dataclass
class Lease:
    """One stream entry leased to this replica."""

    stream: str
    entry_id: bytes
    envelope: Envelope
    deadline: float
    handed_out: bool = False
    replied: bool = False  # the agent answered it (a synchronous request takes one reply)
    leased_at: float = field(default_factory=time.perf_counter)  # the delivery stage's start
    trace: dict[str, str] = field(default_factory=dict)  # its receive span (tracing on)


def sender_id(member: bytes) -> str | None:
    """The agent id a member of a senders set names, or None when it names none."""
    try:
        name = member.decode()
        return name if qualify(name) == name else None
    except (UnicodeDecodeError, InvalidAgentIdError):
        return None


def _rotation(items: Sequence[str], turn: int, size: int) -> list[str]:
    """``size`` items of ``items`` from position ``turn`` on, wrapping around."""
    if not items:
        return []
    start = turn % len(items)
    return [*items[start:], *items[:start]][:size]


class Inbox:
    """Leases of one replica on its agent's senders' streams."""

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
        check: Callable[[list[Read]], Awaitable[list[str | None]]],
        metrics: Metrics,
        blocking: aioredis.Redis | None = None,
        trouble: Callable[[], None] = lambda: None,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        """``blocking``: the client for blocking reads (``client`` if None); ``trouble``:
        called when Redis could not be reached; ``tracer``: records each message's
        ``receive`` (with ``verify``), ``deliver`` and ``ack`` spans."""
        self._tracer = tracer
        self._redis = client
        self._blocking = blocking or client
        self._trouble = trouble
        self._keys = keys
        self._replica = replica
        self.lease_ms = lease_ms
        self._refresh_seconds = min(REFRESH_SECONDS, lease_ms / 1000)
        self._max_attempts = max_attempts
        self._max_inflight = max_inflight
        self._max_subscribers = max_subscribers
        self._check = check
        self._metrics = metrics
        self.leases: dict[str, Lease] = {}
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._ready_waiters: list[asyncio.Future[None]] = []
        self._subscribers = 0
        self._wake = asyncio.Event()
        self._reclaim_now = asyncio.Event()
        self._acks: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._acking: asyncio.Task[None] | None = None
        self._streams: dict[str, str] = {}  # adopted stream -> its sender
        self._regroup = False
        self._refresh_at = 0.0
        self._read_turn = 0
        self._empty_windows = 0  # window reads in a row that found nothing
        self._reclaim_turn = 0
        self._cursors: dict[str, bytes | str] = {}  # XAUTOCLAIM cursor per stream
        self._due: dict[str, None] = {}  # streams with entries to reclaim soon, in order

    async def setup(self) -> None:
        """Create the ring's consumer group (and the ring) if missing, and adopt the streams
        of the senders in the set."""
        try:
            await self._redis.xgroup_create(self._keys.ring, CONSUMER_GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        await self.refresh()

    async def restore(self) -> None:
        """Set up again on a server that may have lost the groups: adopt every stream anew."""
        for stream in list(self._streams):
            self._forget(stream)
        await self.setup()

    async def refresh(self) -> None:
        """Look at the senders set: adopt the streams of new senders, forget those of senders
        no longer listed (their stream is gone), drop names that are no agent id."""
        self._refresh_at = time.monotonic() + self._refresh_seconds
        members = await self._redis.smembers(self._keys.senders)
        listed = {member: sender_id(member) for member in members}
        names = {name for name in listed.values() if name is not None}
        for stream in [s for s, sender in self._streams.items() if sender not in names]:
            self._forget(stream)
        bogus = [member for member, name in listed.items() if name is None]
        if bogus:
            await self._redis.srem(self._keys.senders, *bogus)
        known = set(self._streams.values())
        new = sorted(names - known)
        for start in range(0, len(new), ADOPT_PER_CALL):
            chunk = new[start : start + ADOPT_PER_CALL]
            streams = [self._keys.inbox(name) for name in chunk]
            adopted = await self._redis.fcall(
                "mas_adopt", 1 + len(chunk), self._keys.senders, *streams, *chunk
            )
            for name, stream, ok in zip(chunk, streams, adopted, strict=True):
                if ok:
                    self._streams[stream] = name
                    log.info("reading the stream of sender %s", name)
        self._metrics.sender_streams.set(len(self._streams))

    def _forget(self, stream: str) -> None:
        """Stop reading ``stream`` (its sender is no longer listed, or it lost its group)."""
        self._streams.pop(stream, None)
        self._cursors.pop(stream, None)
        self._due.pop(stream, None)

    def sender_of(self, stream: str) -> str:
        """The sender whose stream ``stream`` is."""
        return self._keys.inbox_sender(stream)

    # -- subscribers ------------------------------------------------------------------------

    @contextlib.contextmanager
    def subscription(self) -> Iterator[None]:
        """While inside, this replica reads its senders' streams for the subscriber; Refusal
        ``too_many_subscribers`` when ``max_subscribers`` are subscribed already."""
        if self._subscribers >= self._max_subscribers:
            raise Refusal(
                ErrorCode.TOO_MANY_SUBSCRIBERS,
                f"this sidecar serves at most {self._max_subscribers} delivery streams at once "
                "(MAS_MAX_SUBSCRIBERS); one stream is enough to receive every delivery",
                1,
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
            await self.delivery_ready()
            taken = self.ready_deliveries(1)
            if taken:
                return taken[0]

    def delivery_ready(self) -> asyncio.Future[None]:
        """A future done once a leased message is ready to hand out (at once when one is): a
        subscriber awaits it, with whatever else it waits for, without a task of its own, so a
        lease wakes it at the loop's next turn."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._ready.empty():
            future.set_result(None)
        else:
            self._ready_waiters = [w for w in self._ready_waiters if not w.done()]
            self._ready_waiters.append(future)
        return future

    def _make_ready(self, message_id: str) -> None:
        self._ready.put_nowait(message_id)
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

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
        else:
            self._metrics.delivered(lease.envelope.created_at, int(time.time() * 1000))
        if not lease.trace:
            return lease.envelope
        now = time.time_ns()
        leased = now - int((time.perf_counter() - lease.leased_at) * 1e9)
        self._tracer.record("deliver", parent=lease.trace, start_ns=leased, end_ns=now)
        # The agent continues the trace under this sidecar's receive span.
        return lease.envelope.model_copy(update={"trace": lease.trace})

    def leased_at(self, envelopes: Sequence[Envelope]) -> list[float]:
        """When ``envelopes``, handed out, were leased (``time.perf_counter()``): read before
        they are written to a subscriber, since an ack may end a lease while the write runs."""
        return [self.leases[e.id].leased_at for e in envelopes if e.id in self.leases]

    def written(self, leased_at: Sequence[float]) -> None:
        """A subscriber's stream took the deliveries leased at ``leased_at``: time the
        ``delivery`` stage of each, from its lease to now."""
        now = time.perf_counter()
        for started in leased_at:
            self._metrics.observe_stage("delivery", now - started)

    def hand_back(self, envelope: Envelope) -> None:
        """A subscriber could not take ``envelope``: offer it to the next one."""
        lease = self.leases.get(envelope.id)
        if lease is not None:
            lease.handed_out = False
            self._make_ready(envelope.id)

    def _capacity(self) -> int:
        if not self._subscribers:
            return 0
        now = time.monotonic()
        active = sum(1 for lease in self.leases.values() if lease.deadline > now)
        return self._max_inflight - active

    # -- background loops -------------------------------------------------------------------

    async def read_until(self, stop: asyncio.Event) -> None:
        """Read new entries while there is a subscriber and room for more leases; look at the
        senders set once a lease (at most every ``REFRESH_SECONDS``) all the same."""
        while not stop.is_set():
            try:
                if self._regroup:  # a stream lost its group: adopt every one again
                    await self.restore()
                    self._regroup = False
                elif time.monotonic() >= self._refresh_at:
                    await self.refresh()
                capacity = self._capacity()
                if capacity <= 0:
                    self._wake.clear()
                    await wait_event(self._wake, max(0.0, self._refresh_at - time.monotonic()))
                    continue
                await self._read(capacity)
            except REDIS_ERRORS as exc:
                await self._redis_failed("read", exc)
            except redis.exceptions.ResponseError as exc:
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                log.warning("a stream lost its consumer group (%s); adopting them again", exc)
                self._regroup = True

    async def _read(self, capacity: int) -> None:
        """One read of new entries: see the module docstring."""
        streams = list(self._streams)
        windows = math.ceil(len(streams) / capacity)
        if windows <= 1 or self._empty_windows >= windows:
            chosen = _rotation(streams, self._read_turn, len(streams))
            count = max(1, min(_READ_BATCH, capacity // max(1, len(streams))))
            until_refresh = math.ceil((self._refresh_at - time.monotonic()) * 1000)
            block: int | None = max(1, min(BLOCK_MS, until_refresh))  # BLOCK 0: forever
            self._empty_windows = 0
        else:
            chosen, count, block = _rotation(streams, self._read_turn, capacity), 1, None
        self._read_turn += len(chosen)
        started = time.perf_counter()
        answer = await (self._redis if block is None else self._blocking).xreadgroup(
            CONSUMER_GROUP,
            self._replica,
            {self._keys.ring: ">", **dict.fromkeys(chosen, ">")},
            count=count,
            block=block,
        )
        # A blocking read's wait for the next message is idle time, not the read's: its
        # ``redis_read`` stage starts when its answer came.
        answered = time.perf_counter()
        rang: list[bytes] = []
        entries: list[Entry] = []
        for stream, items in answer or ():
            name = stream.decode()
            if name == self._keys.ring:
                rang += [entry_id for entry_id, _ in items]
            else:
                entries += [(name, entry_id, fields, 1) for entry_id, fields in items]
        if block is None:
            self._empty_windows = 0 if entries else self._empty_windows + 1
        if entries:
            began = answered if block else started
            self._metrics.observe_stage("redis_read", time.perf_counter() - began, len(entries))
        if len(entries) > capacity:
            await self._release([(s, e) for s, e, _, _ in entries[capacity:]], unread=True)
            entries = entries[:capacity]
        if entries:
            await self._lease(entries)
        if rang:
            await self._rung(rang)

    async def _rung(self, entry_ids: list[bytes]) -> None:
        """A sender announced itself: delete the ring's entries and look at the set now."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self._keys.ring, CONSUMER_GROUP, *entry_ids)
            pipe.xdel(self._keys.ring, *entry_ids)
            await pipe.execute()
        await self.refresh()

    async def reclaim_until(self, stop: asyncio.Event) -> None:
        """Take over entries whose lease ran out, wherever they were leased: every quarter of
        the lease, right after one of this replica's own leases ran out, and at once when an
        entry is known to be due."""
        more = False
        while not stop.is_set():
            if not more:
                self._reclaim_now.clear()
                await wait_event(self._reclaim_now, self._reclaim_wait())
            self._forget_stale_leases()
            more = False
            if self._capacity() <= 0:
                continue
            try:
                more = await self._reclaim_once()
            except REDIS_ERRORS as exc:
                await self._redis_failed("reclaim", exc)

    def _reclaim_wait(self) -> float:
        """Seconds until the next reclaim tick: a quarter of the lease, or less when one of this
        replica's leases runs out sooner (Redis counts its idle time from the read or the last
        extension, which came before the local deadline was set: hence the margin)."""
        now = time.monotonic()
        wait = self.lease_ms / 4000
        for lease in self.leases.values():
            if lease.deadline > now:
                wait = min(wait, lease.deadline - now + EXPIRY_MARGIN_SECONDS)
        return wait

    def _reclaim_streams(self, budget: int) -> list[str]:
        """The ``budget`` streams (at most) of one reclaim tick: due ones first (at most half,
        at least one), then the others in rotation."""
        due = list(self._due)[: max(1, budget // 2)]
        for stream in due:
            del self._due[stream]
        rest = [stream for stream in self._streams if stream not in due]
        turn = _rotation(rest, self._reclaim_turn, budget - len(due))
        self._reclaim_turn += len(turn)
        return due + turn

    async def _reclaim_once(self) -> bool:
        """One reclaim tick; whether a stream gave all that was asked (more may wait)."""
        capacity = self._capacity()
        streams = self._reclaim_streams(min(RECLAIM_STREAMS, capacity)) if capacity > 0 else []
        if not streams:
            return False
        count = capacity // len(streams)  # each at least 1: no more streams than room
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xautoclaim(
                    stream, CONSUMER_GROUP, self._replica, min_idle_time=self.lease_ms,
                    start_id=self._cursors.get(stream, "0-0"), count=count,
                )  # fmt: skip
            answers = await pipe.execute(raise_on_error=False)
        claimed: list[tuple[str, bytes, dict[bytes, bytes]]] = []
        more = False
        for stream, answer in zip(streams, answers, strict=True):
            if isinstance(answer, redis.exceptions.ResponseError):
                if "NOGROUP" not in str(answer):
                    raise answer
                self._forget(stream)  # gone: the next look at the set decides
                self._refresh_at = 0.0
                continue
            self._cursors[stream] = answer[0]
            if len(answer[1]) >= count:
                self._due[stream] = None
                more = True
            claimed += [(stream, e, fields) for e, fields in answer[1] if fields is not None]
        if not claimed:
            return more
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, entry_id, _fields in claimed:
                pipe.xpending_range(stream, CONSUMER_GROUP, entry_id, entry_id, 1)
            pending = await pipe.execute()
        await self._lease(
            [
                (stream, entry_id, fields, int(info[0]["times_delivered"]))
                for (stream, entry_id, fields), info in zip(claimed, pending, strict=True)
                if info  # else acked by its old holder in the meantime
            ]
        )
        return more

    def _reclaim_soon(self, stream: str) -> None:
        """``stream`` has an entry to reclaim now: visit it first, from its start."""
        self._cursors.pop(stream, None)
        self._due[stream] = None
        self._reclaim_now.set()

    def _forget_stale_leases(self) -> None:
        """Drop leases that ran out long ago (another replica has surely reclaimed them)."""
        horizon = time.monotonic() - self.lease_ms / 1000
        for message_id in [m for m, lease in self.leases.items() if lease.deadline < horizon]:
            del self.leases[message_id]
        self._metrics.inflight.set(len(self.leases))

    async def _redis_failed(self, loop: str, exc: Exception) -> None:
        self._metrics.redis_errors.labels(loop).inc()
        log.warning("inbox %s loop: Redis unavailable (%s); retrying", loop, exc)
        self._trouble()
        await asyncio.sleep(1)

    async def _lease(self, entries: list[Entry]) -> None:
        """Check entries read together, then lease each one that passes and dead-letter the
        others."""
        received = time.time_ns()
        candidates: list[tuple[str, bytes, dict[bytes, bytes], Envelope]] = []
        for stream, entry_id, fields, attempt in entries:
            try:
                envelope = Envelope.from_entry(fields, attempt)
            except EnvelopeError as exc:
                await self._dead_letter(stream, entry_id, fields, f"malformed: {exc}", attempt)
                continue
            if envelope.target != self._keys.agent_id:
                reason, attempts = "misaddressed", attempt
            elif attempt > self._max_attempts:
                reason, attempts = "max_attempts_exceeded", attempt - 1
            elif envelope.is_expired(time.time_ns() // 1_000_000):
                reason, attempts = "expired", attempt - 1
            else:
                candidates.append((stream, entry_id, fields, envelope))
                continue
            await self._dead_letter(stream, entry_id, fields, reason, attempts, envelope=envelope)
        if not candidates:
            return
        reads = [Read(envelope, s, self.sender_of(s), e) for s, e, _, envelope in candidates]
        checking = time.time_ns()
        refusals = await self._check(reads)
        checked = time.time_ns()
        for (stream, entry_id, fields, envelope), refusal in zip(candidates, refusals, strict=True):
            if refusal:
                await self._dead_letter(
                    stream, entry_id, fields, refusal, envelope.attempt - 1, envelope=envelope
                )
                continue
            previous = self.leases.get(envelope.id)
            self.leases[envelope.id] = Lease(
                stream, entry_id, envelope, time.monotonic() + self.lease_ms / 1000,
                trace=self._trace_receive(envelope, received, (checking, checked)),
            )  # fmt: skip
            if previous is None or previous.handed_out:
                self._make_ready(envelope.id)
        self._metrics.inflight.set(len(self.leases))

    def _trace_receive(
        self, envelope: Envelope, received: int, verify: tuple[int, int]
    ) -> dict[str, str]:
        """Record the ``receive`` span of a leased message (from its read to now, under the
        sender's span) and its ``verify`` child; the receive span's trace context."""
        if not self._tracer.enabled:
            return {}
        trace = self._tracer.record(
            "receive", parent=envelope.trace, start_ns=received, end_ns=time.time_ns(),
            kind="consumer", attributes=message_attributes(envelope),
        )  # fmt: skip
        self._tracer.record("verify", parent=trace, start_ns=verify[0], end_ns=verify[1])
        return trace

    def _trace_ack(self, leases: Iterable[Lease], started: int) -> None:
        ended = time.time_ns()
        for lease in leases:
            if lease.trace:
                self._tracer.record("ack", parent=lease.trace, start_ns=started, end_ns=ended)

    # -- the agent's answers ----------------------------------------------------------------

    def _take(self, message_id: str) -> Lease:
        lease = self.leases.pop(message_id, None)
        if lease is None:
            raise Refusal(
                ErrorCode.DELIVERY_NOT_FOUND,
                f"delivery {message_id[:64]!r} is not leased to this sidecar "
                "(already answered, lease expired, or unknown)",
            )
        self._metrics.inflight.set(len(self.leases))
        self._wake.set()  # room for another lease: a reader waiting for capacity reads now
        return lease

    def lease(self, message_id: str) -> Lease:
        """A current lease; Refusal ``delivery_not_found`` otherwise."""
        lease = self.leases.get(message_id)
        if lease is None:
            raise Refusal(
                ErrorCode.DELIVERY_NOT_FOUND,
                f"delivery {message_id[:64]!r} is not leased to this sidecar",
            )
        return lease

    async def ack(self, message_id: str) -> None:
        """Done: XACK + XDEL in one MULTI, shared with the acks that arrive meanwhile."""
        lease = self._take(message_id)
        started = time.time_ns()
        await self._queue_acks([(lease.stream, lease.entry_id)])
        self._metrics.acks.inc()
        self._trace_ack([lease], started)

    async def ack_many(self, message_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Ack every delivery of ``message_ids`` that is leased here, in the same MULTI (with
        the acks that arrive meanwhile); ``(acked, unknown)`` ids, in the order given. An id
        given twice counts once; unknown ids (answered, expired or never leased) are only
        reported."""
        acked: list[str] = []
        unknown: list[str] = []
        taken: list[Lease] = []
        for message_id in dict.fromkeys(message_ids):
            lease = self.leases.pop(message_id, None)
            if lease is None:
                unknown.append(message_id)
                continue
            acked.append(message_id)
            taken.append(lease)
        if taken:
            self._metrics.inflight.set(len(self.leases))
            self._wake.set()  # room for more leases: a reader waiting for capacity reads now
            started = time.time_ns()
            await self._queue_acks([(lease.stream, lease.entry_id) for lease in taken])
            self._metrics.acks.inc(len(taken))
            self._trace_ack(taken, started)
        return acked, unknown

    async def _queue_acks(self, entries: Sequence[tuple[str, bytes]]) -> None:
        """Queue ``entries`` (stream, entry id) for the next ack MULTI and wait until it went
        through."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.extend((stream, entry_id, done) for stream, entry_id in entries)
        if self._acking is None or self._acking.done():
            self._acking = asyncio.create_task(self._flush_acks())
        await done

    async def _flush_acks(self) -> None:
        """Send the queued acks, one MULTI (per stream, one XACK and one XDEL of its entries;
        all streams of the agent share its slot) per round trip, until none is left."""
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    for stream, entries in _by_stream((s, e) for s, e, _ in batch).items():
                        pipe.xack(stream, CONSUMER_GROUP, *entries)
                        pipe.xdel(stream, *entries)
                    await pipe.execute()
            except Exception as exc:  # each waiting request answers with it
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def nack(self, message_id: str, delay_ms: int) -> None:
        """Make the entry reclaimable after ``delay_ms`` (at most one lease)."""
        lease = self._take(message_id)
        delay = min(delay_ms, self.lease_ms)
        await self._redis.xclaim(
            lease.stream, CONSUMER_GROUP, self._replica, 0, [lease.entry_id],
            idle=self.lease_ms - delay, justid=True,
        )  # fmt: skip
        self._metrics.nacks.inc()
        asyncio.get_running_loop().call_later(delay / 1000, self._reclaim_soon, lease.stream)

    async def extend(self, message_id: str) -> None:
        """Start the lease again (the agent needs more time); Refusal ``delivery_not_found``
        when it is not leased here any more."""
        extended, _ = await self.extend_many([message_id])
        if not extended:
            raise Refusal(
                ErrorCode.DELIVERY_NOT_FOUND,
                f"delivery {message_id[:64]!r} is not leased to this sidecar, or its lease ran out",
            )

    async def extend_many(self, message_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Start the lease of every delivery of ``message_ids`` again, one XCLAIM per stream in
        one round trip; ``(extended, unknown)`` ids, in the order given (an id given twice
        counts once). Unknown: not leased here, its lease ran out, or its entry left the pending
        list (taken over and acked elsewhere); such a lease is dropped."""
        started = time.monotonic()
        wanted = list(dict.fromkeys(message_ids))
        held: dict[str, Lease] = {}
        for message_id in wanted:
            lease = self.leases.get(message_id)
            if lease is not None and lease.deadline < started:
                del self.leases[message_id]  # ran out: another replica may have it already
            elif lease is not None:
                held[message_id] = lease
        by_stream = _by_stream((lease.stream, lease.entry_id) for lease in held.values())
        claimed: set[tuple[str, bytes]] = set()
        if by_stream:
            async with self._redis.pipeline(transaction=False) as pipe:
                for stream, entry_ids in by_stream.items():
                    pipe.xclaim(stream, CONSUMER_GROUP, self._replica, 0, entry_ids, justid=True)
                answers = await pipe.execute()
            for stream, answer in zip(by_stream, answers, strict=True):
                claimed.update((stream, entry_id) for entry_id in answer)
        # Redis restarted the lease after ``started``: the local deadline errs on the early side.
        deadline = started + self.lease_ms / 1000
        extended: list[str] = []
        for message_id, lease in held.items():
            if self.leases.get(message_id) is not lease:
                continue  # answered meanwhile
            if (lease.stream, lease.entry_id) in claimed:
                lease.deadline = deadline
                extended.append(message_id)
            else:
                del self.leases[message_id]
        self._metrics.inflight.set(len(self.leases))
        self._metrics.lease_extensions.inc(len(extended))
        if len(extended) < len(held):
            self._wake.set()  # room for another lease
        kept = set(extended)
        return extended, [message_id for message_id in wanted if message_id not in kept]

    async def reject(self, message_id: str, reason: str) -> None:
        """Dead-letter now, on the agent's word."""
        lease = self._take(message_id)
        await self._dead_letter(
            lease.stream,
            lease.entry_id,
            lease.envelope.to_entry(),
            f"rejected: {reason}",
            lease.envelope.attempt,
            envelope=lease.envelope,
        )

    async def release_all(self) -> int:
        """Make every lease reclaimable at once (clean shutdown: other replicas take over)."""
        entries = [(lease.stream, lease.entry_id) for lease in self.leases.values()]
        self.leases.clear()
        await self._release(entries, unread=False)
        return len(entries)

    async def _release(self, entries: Iterable[tuple[str, bytes]], *, unread: bool) -> None:
        """Make ``entries`` (stream, entry id) of this replica reclaimable at once; ``unread``:
        they were never checked nor handed out, so their delivery count goes back to 0 (the
        replica that reclaims them delivers them as attempt 1)."""
        by_stream = _by_stream(entries)
        if not by_stream:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xclaim(
                    stream, CONSUMER_GROUP, self._replica, 0, ids, idle=self.lease_ms,
                    retrycount=0 if unread else None, justid=True,
                )  # fmt: skip
            await pipe.execute()
        for stream in by_stream:
            self._reclaim_soon(stream)

    async def _dead_letter(
        self,
        stream: str,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        reason: str,
        attempts: int,
        *,
        envelope: Envelope | None = None,
    ) -> None:
        """Move an entry to the dead-letter stream; ``envelope``: what it holds, when it could
        be read (its log line then names the message and its trace)."""
        record = {
            **fields,
            DL_REASON: reason.encode()[:1024],
            DL_ATTEMPTS: str(attempts).encode(),
            DL_FAILED_AT: str(time.time_ns() // 1_000_000).encode(),
            DL_SENDER: self.sender_of(stream).encode(),
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._keys.dlq, record)
            pipe.xack(stream, CONSUMER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()
        self._metrics.dead_letters.labels(reason.partition(":")[0]).inc()
        log.info(
            "dead-lettered entry %s of %s: %s", entry_id.decode(), stream, reason,
            extra=message_fields(envelope) if envelope is not None else None,
        )  # fmt: skip


def _by_stream(entries: Iterable[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    """Entry ids grouped by stream, in order."""
    grouped: dict[str, list[bytes]] = {}
    for stream, entry_id in entries:
        grouped.setdefault(stream, []).append(entry_id)
    return grouped
