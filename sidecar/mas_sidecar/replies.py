"""Synchronous requests: futures waiting for replies on this replica's reply stream.

The request route registers a future under the request's message id, then sends; the reader
loop resolves it when a reply with that correlation id arrives. A reply that comes after its
request timed out is counted and logged (its requester already answered 504). Used by the
request route and the app's background tasks.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from mas.envelope import Envelope, EnvelopeError
from mas_sidecar.inbox import REDIS_ERRORS
from mas_sidecar.metrics import Metrics

log = logging.getLogger(__name__)


class ReplyWaiter:
    """Pending requests of one replica, resolved from its reply stream."""

    def __init__(self, client: aioredis.Redis, key: str, metrics: Metrics) -> None:
        self._redis = client
        self.key = key
        self._metrics = metrics
        self._pending: dict[str, asyncio.Future[Envelope]] = {}

    async def setup(self) -> None:
        """Forget replies meant for an earlier process with the same replica id."""
        await self._redis.delete(self.key)

    def expect(self, message_id: str) -> asyncio.Future[Envelope]:
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
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
                for entry_id, fields in entries:
                    last = entry_id
                    self._resolve(fields)
                await self._redis.xdel(self.key, *(entry_id for entry_id, _ in entries))

    def _resolve(self, fields: dict[bytes, bytes]) -> None:
        try:
            envelope = Envelope.from_entry(fields)
        except EnvelopeError as exc:
            log.warning("ignored a malformed reply: %s", exc)
            return
        future = self._pending.pop(envelope.correlation_id or "", None)
        if future is None or future.done():
            self._metrics.late_replies.inc()
            log.info("reply %s came after its request timed out", envelope.id)
        else:
            future.set_result(envelope)
