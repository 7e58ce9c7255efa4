"""Concurrent calls of one kind share HTTP requests: the SDK's sends and acks.

While fewer than ``max_in_flight`` requests of a kind are under way, a call leaves at once, so
a client that makes one call at a time adds no latency and uses the single-item endpoint
exactly as before: a call with nothing queued before it makes its request from its caller's own
task (no task of its own, so no turn of the event loop before it leaves nor after it is
answered). Calls made while the limit is reached queue, and leave together in one
request (up to ``max_batch``) as soon as a request finishes. Each call still gets its own
result or its own exception; a call cancelled while it waits in the queue is not sent.

The sidecar checks every message of a batch on its own, so this changes how many HTTP
exchanges the agent and its sidecar make, not what is checked; it is what lets an SDK agent
with many sends in flight reach the throughput of ``POST /v1/messages/batch``
(docs/benchmarks.md). Used by :class:`mas.client.SidecarClient`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """Sends ``Item``s through ``one`` (a single call) or ``many`` (a batch whose results are
    in order, each a ``Result`` or the exception that call would have raised)."""

    def __init__(
        self,
        one: Callable[[Item], Awaitable[Result]],
        many: Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]],
        *,
        max_batch: int,
        max_in_flight: int,
    ) -> None:
        self._one = one
        self._many = many
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._requests: set[asyncio.Task[None]] = set()
        self._direct = 0  # single calls under way in their callers' tasks

    async def call(self, item: Item) -> Result:
        """``item``'s result, through whichever request carries it."""
        if not self._queue and self._in_flight() < self._max_in_flight:
            self._direct += 1
            try:
                return await self._one(item)
            finally:
                self._direct -= 1
                self._fill()
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._fill()
        return await future

    def _in_flight(self) -> int:
        return len(self._requests) + self._direct

    def _fill(self) -> None:
        """Start batches of the queued calls while there is room."""
        while self._queue and self._in_flight() < self._max_in_flight:
            self._start()

    def _start(self) -> None:
        taken, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
        batch = [(item, future) for item, future in taken if not future.done()]
        if batch:
            request = asyncio.ensure_future(self._run(batch))
            self._requests.add(request)
            request.add_done_callback(self._finished)

    def _finished(self, request: asyncio.Task[None]) -> None:
        self._requests.discard(request)
        self._fill()

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        results: Sequence[Result | BaseException]
        try:
            if len(batch) == 1:
                results = [await self._one(batch[0][0])]
            else:
                results = await self._many([item for item, _ in batch])
        except Exception as exc:  # the request as a whole failed: so did each call in it
            results = [exc] * len(batch)
        except BaseException:  # cancelled (the loop is closing): so are the calls
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
