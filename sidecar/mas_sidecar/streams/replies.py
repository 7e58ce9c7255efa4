"""Synchronous requests: futures waiting for replies on this replica's reply streams.

Each agent that a replica asks answers into a stream of its own,
``mas:{agent}:replies:<replica>:<target>``, which only that target's Redis user may write (and
this agent's): a compromised agent can trim or future-date only its own replies, and expire
nothing. This replica creates the stream (empty) and sets its expiry (``REPLY_STREAM_TTL_MS``,
renewed once half of it is gone, so it always outlives the longest request) before its first
request to the target; the replier only appends, and only to a stream that exists, so a reply
to a replica that stopped asking long ago creates no key that never expires.

The reader loop blocks (up to ``BLOCK_MS``, on the blocking client) on the reply streams of the
targets of pending requests and of those asked in the last ``KEEP_SECONDS``, and on the
replica's own bell, ``mas:{agent}:replies:<replica>``: a request to a target whose stream is not
read yet rings it, so the reader reads that stream too (from its start, so a reply that came
first is not missed). The entries it handled are deleted in the same round trip as its next
read.

The request route registers a future under the request's message id and its target, prepares
the target's stream, then sends; the reader loop resolves the future when a reply with that
correlation id arrives. A reply passes the same receive checks as a message (its sender's own
stream, signature, token, replay, authorization) and must come from the agent the request went
to; anything else is refused, audited by the gateway and logged, and the request keeps waiting
for the real reply. Only the reply a pending request waits for is spared the need for an allow
rule (deny rules still apply), and only once: the first such reply resolves the request, any
later one is an ordinary message that the rules must allow. A reply that comes after its request
timed out is counted and logged (its requester already answered 504).

A progress report (:attr:`~mas_core.envelope.Envelope.is_progress`) on a pending request, from
the agent asked, passes the same checks and is spared the allow rule each time (it answers
nothing: only the reply resolves the request); it is handed to the request's progress listener,
if one was given (:meth:`ReplyWaiter.expect`), else dropped. One that comes after its request
was answered or timed out is dropped before the checks and counted
(``mas_progress_reports{outcome="late"}``): never an error, never a retry. Used by the request
route, inbound A2A calls and the app's background tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as aioredis

from mas_core.envelope import Envelope, EnvelopeError
from mas_core.keys import AgentKeys
from mas_core.telemetry.logs import message_fields
from mas_sidecar.checks.replay import Read
from mas_sidecar.metrics import Metrics
from mas_sidecar.redis_client import BLOCK_MS
from mas_sidecar.streams.errors import REDIS_ERRORS

log = logging.getLogger(__name__)
# The gateway's receive checks: per entry read, why it is refused, or None; the second argument
# says which envelopes answer a pending request.
Check = Callable[[Sequence[Read], Callable[[Envelope], bool]], Awaitable[list[str | None]]]
MAX_TIMEOUT_MS = 300_000  # the longest a synchronous request waits for its reply
REPLY_STREAM_TTL_MS = 2 * MAX_TIMEOUT_MS  # renewed at half: it outlives the longest request
KEEP_SECONDS = 60.0  # a target's stream stays read this long after its last request


class ReplyWaiter:
    """Pending requests of one replica, resolved from its reply streams."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: AgentKeys,
        replica: str,
        metrics: Metrics,
        check: Check,
        *,
        blocking: aioredis.Redis | None = None,
        trouble: Callable[[], None] = lambda: None,
    ) -> None:
        """``blocking``: the client for the blocking read (``client`` if None); ``trouble``:
        called when Redis could not be reached."""
        self._redis = client
        self._blocking = blocking or client
        self._trouble = trouble
        self._keys = keys
        self._replica = replica
        self.bell = keys.reply_bell(replica)
        self._metrics = metrics
        self._check = check
        self._pending: dict[str, tuple[str, asyncio.Future[Envelope]]] = {}
        self._listeners: dict[str, Callable[[Envelope], None]] = {}  # request id -> progress
        self._read: dict[str, bytes | str] = {}  # reply stream read -> last entry id read
        self._asked: dict[str, float] = {}  # target -> when it was last asked (monotonic)
        self._renew_at: dict[str, float] = {}  # target -> when its stream's expiry is renewed
        self._preparing: dict[str, asyncio.Future[None]] = {}
        self._bell_read: bytes | str = "0-0"

    async def setup(self) -> None:
        """Forget the bell of an earlier process with the same replica id."""
        await self._redis.delete(self.bell)

    async def restore(self) -> None:
        """Set up again on a server that may have lost the reply streams: create those read
        that are missing (a replier appends only to an existing stream) and read them, and the
        bell, from their start."""
        await self.setup()
        self._bell_read = "0-0"
        streams = list(self._read)
        if not streams:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.exists(stream)
            present = await pipe.execute()
        missing = [stream for stream, there in zip(streams, present, strict=True) if not there]
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream in missing:
                self._read[stream] = "0-0"
                pipe.xadd(stream, {"created": "1"}, maxlen=0, approximate=False)
                pipe.pexpire(stream, REPLY_STREAM_TTL_MS)
            await pipe.execute()

    def expect(
        self,
        message_id: str,
        target: str,
        progress: Callable[[Envelope], None] | None = None,
    ) -> asyncio.Future[Envelope]:
        """A future for the reply to request ``message_id``, which only ``target`` may send;
        ``progress`` is called with each progress report on it that passed the checks, in the
        order they were sent, until the reply comes."""
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = (target, future)
        if progress is not None:
            self._listeners[message_id] = progress
        self._asked[target] = time.monotonic()
        return future

    def forget(self, message_id: str) -> None:
        self._pending.pop(message_id, None)
        self._listeners.pop(message_id, None)

    async def prepare(self, target: str) -> None:
        """Before asking ``target``: its reply stream exists, outlives the request, and is
        read. One round trip for a target not read yet or whose expiry is due, else none."""
        stream = self._keys.replies(self._replica, target)
        if stream in self._read and time.monotonic() < self._renew_at.get(target, 0.0):
            return
        preparing = self._preparing.get(target)
        if preparing is None:
            preparing = self._preparing[target] = asyncio.ensure_future(
                self._create(target, stream)
            )
            preparing.add_done_callback(lambda _: self._preparing.pop(target, None))
        await asyncio.shield(preparing)

    async def _create(self, target: str, stream: str) -> None:
        new = stream not in self._read
        if new:
            self._read[stream] = "0-0"  # before the bell rings: the woken reader reads it
        renew_at = time.monotonic() + REPLY_STREAM_TTL_MS / 2000
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if new:  # exists, empty: what came for a replica no longer waiting goes
                    pipe.xadd(stream, {"created": "1"}, maxlen=0, approximate=False)
                pipe.pexpire(stream, REPLY_STREAM_TTL_MS)
                if new:
                    pipe.xadd(self.bell, {"stream": stream}, maxlen=1, approximate=False)
                await pipe.execute()
        except BaseException:
            if new:
                self._read.pop(stream, None)
            raise
        self._renew_at[target] = renew_at

    def _forget_idle_targets(self) -> None:
        """Stop reading the streams of targets neither waited for nor asked for a while."""
        waiting = {target for target, _ in self._pending.values()}
        horizon = time.monotonic() - KEEP_SECONDS
        for target in [t for t, at in self._asked.items() if at < horizon and t not in waiting]:
            del self._asked[target]
            self._renew_at.pop(target, None)
            self._read.pop(self._keys.replies(self._replica, target), None)

    async def read_until(self, stop: asyncio.Event) -> None:
        """Read the reply streams and the bell, handle what comes; the entries handled are
        deleted in the same round trip as the next read (which follows at once)."""
        handled: dict[str, list[bytes]] = {}  # reply stream -> entries handled, to delete
        while not stop.is_set():
            self._forget_idle_targets()
            streams = {self.bell: self._bell_read, **self._read}
            try:
                async with self._blocking.pipeline(transaction=False) as pipe:
                    for stream, entry_ids in handled.items():
                        pipe.xdel(stream, *entry_ids)
                    pipe.xread(streams, count=100, block=BLOCK_MS)
                    answer = (await pipe.execute())[-1]
            except REDIS_ERRORS as exc:
                self._metrics.redis_errors.labels("replies").inc()
                log.warning("reply loop: Redis unavailable (%s); retrying", exc)
                self._trouble()
                await asyncio.sleep(1)
                continue
            handled = {}
            for raw, entries in answer or ():
                stream = raw.decode()
                if stream == self.bell:
                    self._bell_read = entries[-1][0]
                    continue
                if stream in self._read:
                    self._read[stream] = entries[-1][0]
                await self._handle(stream, entries)
                handled[stream] = [entry_id for entry_id, _ in entries]

    async def _handle(self, stream: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        sender = self._keys.reply_sender(self._replica, stream)
        replies: list[Read] = []
        for entry_id, fields in entries:
            try:
                envelope = Envelope.from_entry(fields)
            except EnvelopeError as exc:
                log.warning("ignored a malformed reply in %s: %s", stream, exc)
                continue
            if envelope.is_progress and self._waiting(envelope) is None:
                self._late_progress(envelope)
            else:
                replies.append(Read(envelope, stream, sender, entry_id))
        if not replies:
            return
        # Which envelopes may resolve a request is decided before the checks, in stream order:
        # a second reply to the same request in the same batch is not spared the rules. Progress
        # reports on a pending request, from the agent asked, are spared them each time.
        answering: set[int] = set()
        claimed: set[str] = set()
        for read in replies:
            envelope = read.envelope
            if envelope.is_progress:
                if self._waiting(envelope) == envelope.sender:
                    answering.add(id(envelope))
            elif envelope.correlation_id not in claimed and self._answers(envelope):
                claimed.add(envelope.correlation_id or "")
                answering.add(id(envelope))
        refusals = await self._check(replies, lambda envelope: id(envelope) in answering)
        for read, refusal in zip(replies, refusals, strict=True):
            envelope = read.envelope
            if refusal is not None:
                log.warning(
                    "refused reply %s from %s: %s", envelope.id, envelope.sender, refusal,
                    extra=message_fields(envelope),
                )  # fmt: skip
            elif envelope.is_progress:
                self._progressed(envelope)
            else:
                self._resolve(envelope)

    def _waiting(self, envelope: Envelope) -> str | None:
        """The target of the pending request ``envelope`` correlates to, None when that request
        is not pending (answered, timed out, or unknown)."""
        pending = self._pending.get(envelope.correlation_id or "")
        return None if pending is None or pending[1].done() else pending[0]

    def _late_progress(self, envelope: Envelope) -> None:
        self._metrics.progress_reports.labels("late").inc()
        log.debug(
            "progress %s came after its request was answered or timed out", envelope.id,
            extra=message_fields(envelope),
        )  # fmt: skip

    def _progressed(self, envelope: Envelope) -> None:
        """Hand a progress report that passed the checks to its request's listener."""
        target = self._waiting(envelope)
        if target is None:  # the reply came first in the same batch
            self._late_progress(envelope)
            return
        if envelope.sender != target:
            log.warning(
                "refused progress %s: request %s went to %s, not %s", envelope.id,
                envelope.correlation_id, target, envelope.sender, extra=message_fields(envelope),
            )  # fmt: skip
            return
        listener = self._listeners.get(envelope.correlation_id or "")
        self._metrics.progress_reports.labels("unheard" if listener is None else "delivered").inc()
        if listener is not None:
            listener(envelope)

    def _answers(self, envelope: Envelope) -> bool:
        """Whether ``envelope`` is the reply a pending request waits for: a reply, from the
        agent asked, to a request not yet answered."""
        pending = self._pending.get(envelope.correlation_id or "")
        if pending is None or pending[1].done():
            return False
        target, _ = pending
        return envelope.is_reply and envelope.sender == target

    def _resolve(self, envelope: Envelope) -> None:
        request_id = envelope.correlation_id or ""
        pending = self._pending.get(request_id)
        if pending is None or pending[1].done():
            self._metrics.late_replies.inc()
            log.info(
                "reply %s came after its request was answered or timed out", envelope.id,
                extra=message_fields(envelope),
            )  # fmt: skip
            return
        target, future = pending
        if not envelope.is_reply or envelope.sender != target:
            log.warning(
                "refused reply %s: request %s went to %s, not %s",
                envelope.id,
                request_id,
                target,
                envelope.sender,
                extra=message_fields(envelope),
            )
            return
        del self._pending[request_id]
        self._listeners.pop(request_id, None)
        self._metrics.replies.inc()
        future.set_result(envelope)
