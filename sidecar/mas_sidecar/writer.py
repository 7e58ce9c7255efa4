"""One writer per sidecar: every message and audit write goes through it, batched and in order.

Requests submit their commands and await the answers; a single task takes everything queued so
far and sends it as one pipeline (one round trip), then the next batch. So concurrent sends share
round trips, a message and its audit entry go out together, and audit entries reach Redis in the
order their chain was computed.

A submission may also carry *latest* commands, keyed: writes of which only the last per key in a
pipeline matters (the audit chain's head) and reads every submitter can share (an inbox's length
for the circuit breaker). Each key is sent once per pipeline, after all ordered commands, with
the last command submitted for it; every submitter of the key gets that one answer. A batch of
100 messages then costs 100 message and 100 audit appends plus one head update and one length
read per target, not 400 commands. Used by the send path and the audit log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from mas_sidecar.aio import wait_event
from mas_sidecar.inbox import REDIS_ERRORS

log = logging.getLogger(__name__)
Command = tuple[Any, ...]
Latest = Mapping[Hashable, Command]
NOTHING_LATEST: Latest = {}


class _Submission(NamedTuple):
    commands: Sequence[Command]
    latest: Latest
    future: asyncio.Future[list[Any]]


class Writer:
    """Batches submitted commands into pipelines, one at a time."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._queue: list[_Submission] = []
        self._pending = asyncio.Event()

    def submit(
        self, commands: Sequence[Command], latest: Latest = NOTHING_LATEST
    ) -> asyncio.Future[list[Any]]:
        """Queue ``commands`` (``execute_command`` argument tuples) and ``latest`` (see the
        module docstring); the answers of ``commands`` in order, then those of ``latest`` in
        its order."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Submission(commands, latest, future))
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

    async def _flush(self, batch: list[_Submission]) -> None:
        latest: dict[Hashable, Command] = {}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for submission in batch:
                    for command in submission.commands:
                        pipe.execute_command(*command)
                    latest.update(submission.latest)
                for command in latest.values():
                    pipe.execute_command(*command)
                answers = await pipe.execute(raise_on_error=False)
        except REDIS_ERRORS as exc:
            for submission in batch:
                if not submission.future.done():
                    submission.future.set_exception(exc)
            return
        shared = dict(zip(latest, answers[len(answers) - len(latest) :], strict=True))
        position = 0
        for commands, keys, future in batch:
            results = answers[position : position + len(commands)]
            results += [shared[key] for key in keys]
            position += len(commands)
            if future.done():
                continue
            failure = next((r for r in results if isinstance(r, Exception)), None)
            if failure is not None:
                log.error("a batched write failed: %s", failure)
                future.set_exception(failure)
            else:
                future.set_result(results)
