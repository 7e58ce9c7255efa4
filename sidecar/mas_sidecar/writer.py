"""One writer per sidecar: every message and audit write goes through it, batched and in order.

Requests submit their commands and await the answers; a single task takes everything queued so
far and sends it as one pipeline (one round trip), then the next batch. So concurrent sends share
round trips, a message and its audit entry go out together, and audit entries reach Redis in the
order their chain was computed. Used by the send path and the audit log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from mas_sidecar.aio import wait_event
from mas_sidecar.inbox import REDIS_ERRORS

log = logging.getLogger(__name__)
Command = tuple[Any, ...]


class Writer:
    """Batches submitted commands into pipelines, one at a time."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._queue: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        self._pending = asyncio.Event()

    def submit(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        """Queue ``commands`` (``execute_command`` argument tuples); their answers, in order."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((commands, future))
        self._pending.set()
        return future

    async def run_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set() or self._queue:
            if not self._queue:
                await wait_event(self._pending, 1.0)
                self._pending.clear()
                continue
            batch, self._queue = self._queue, []
            await self._flush(batch)

    async def _flush(
        self, batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]
    ) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for commands, _ in batch:
                    for command in commands:
                        pipe.execute_command(*command)
                answers = await pipe.execute(raise_on_error=False)
        except REDIS_ERRORS as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        position = 0
        for commands, future in batch:
            results = answers[position : position + len(commands)]
            position += len(commands)
            if future.done():
                continue
            failure = next((r for r in results if isinstance(r, Exception)), None)
            if failure is not None:
                log.error("a batched write failed: %s", failure)
                future.set_exception(failure)
            else:
                future.set_result(results)
