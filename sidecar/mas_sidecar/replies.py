"""Synchronous requests: futures waiting for replies on this replica's reply stream.

The request route registers a future under the request's message id and its target, then
sends; the reader loop resolves it when a reply with that correlation id arrives. Every agent
may append to another's reply streams (that is how replies travel), so a reply passes the same
receive checks as an inbox entry (signature, token, replay, authorization) and must come from
the agent the request went to; anything else is refused, audited by the gateway and logged, and
the request keeps waiting for the real reply. Only the reply a pending request waits for is
spared the need for an allow rule (deny rules still apply), and only once: the first such reply
resolves the request, any later one is an ordinary message that the rules must allow. A reply
that comes after its request timed out is counted and logged (its requester already answered
504). Used by the request route and the app's background tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as aioredis

from mas.envelope import Envelope, EnvelopeError
from mas_sidecar.inbox import REDIS_ERRORS
from mas_sidecar.metrics import Metrics

log = logging.getLogger(__name__)
# The gateway's receive checks: per (envelope, entry id), why it is refused, or None; the
# second argument says which envelopes answer a pending request.
Check = Callable[
    [Sequence[tuple[Envelope, bytes]], Callable[[Envelope], bool]], Awaitable[list[str | None]]
]


class ReplyWaiter:
    """Pending requests of one replica, resolved from its reply stream."""

    def __init__(self, client: aioredis.Redis, key: str, metrics: Metrics, check: Check) -> None:
        self._redis = client
        self.key = key
        self._metrics = metrics
        self._check = check
        self._pending: dict[str, tuple[str, asyncio.Future[Envelope]]] = {}

    async def setup(self) -> None:
        """Forget replies meant for an earlier process with the same replica id."""
        await self._redis.delete(self.key)

    def expect(self, message_id: str, target: str) -> asyncio.Future[Envelope]:
        """A future for the reply to request ``message_id``, which only ``target`` may send."""
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = (target, future)
        return future

    def forget(self, message_id: str) -> None:
        self._pending.pop(message_id, None)

    async def read_until(self, stop: asyncio.Event) -> None:
        last: bytes | str = "0-0"
        while not stop.is_set():
            try:
                answer = await self._redis.xread({self.key: last}, count=100, block=1000)
            except REDIS_ERRORS as exc:
                self._metrics.redis_errors.labels("replies").inc()
                log.warning("reply loop: Redis unavailable (%s); retrying", exc)
                await asyncio.sleep(1)
                continue
            for _stream, entries in answer or ():
                last = entries[-1][0]
                await self._handle(entries)
                await self._redis.xdel(self.key, *(entry_id for entry_id, _ in entries))

    async def _handle(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        replies: list[tuple[Envelope, bytes]] = []
        for entry_id, fields in entries:
            try:
                replies.append((Envelope.from_entry(fields), entry_id))
            except EnvelopeError as exc:
                log.warning("ignored a malformed reply: %s", exc)
        if not replies:
            return
        # Which envelopes may resolve a request is decided before the checks, in stream order:
        # a second reply to the same request in the same batch is not spared the rules.
        answering: set[int] = set()
        claimed: set[str] = set()
        for envelope, _ in replies:
            if envelope.correlation_id not in claimed and self._answers(envelope):
                claimed.add(envelope.correlation_id or "")
                answering.add(id(envelope))
        refusals = await self._check(replies, lambda envelope: id(envelope) in answering)
        for (envelope, _), refusal in zip(replies, refusals, strict=True):
            if refusal is not None:
                log.warning("refused reply %s from %s: %s", envelope.id, envelope.sender, refusal)
            else:
                self._resolve(envelope)

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
            log.info("reply %s came after its request was answered or timed out", envelope.id)
            return
        target, future = pending
        if not envelope.is_reply or envelope.sender != target:
            log.warning(
                "refused reply %s: request %s went to %s, not %s",
                envelope.id,
                request_id,
                target,
                envelope.sender,
            )
            return
        del self._pending[request_id]
        future.set_result(envelope)
