"""The sidecar's background loops, supervised: each must run for as long as the process does.

Every loop (inbox read, reclaim, replies, registry lease, policy refresh, writer, credentials,
recovery) is started through :class:`Loops`, which restarts it after a second when it ends
early or fails with an exception (logged and counted), and knows at any time which loops are not
running: ``/readyz`` answers 503 ``not_ready`` (reason ``loop_stopped``) while one is not. A
loop that fails also tells the recovery (:mod:`mas_sidecar.recovery`): most such failures are
the server's (a missing group, user or function), which recovery repairs before the restart.

Used by the app's lifespan (start, stop) and the readiness route.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from mas_sidecar.aio import wait_event
from mas_sidecar.metrics import Metrics

log = logging.getLogger(__name__)

Loop = Callable[[asyncio.Event], Awaitable[None]]  # runs until the event is set
RESTART_SECONDS = 1.0  # between a loop's failure and its restart: a failing server is not hammered
STOP_SECONDS = 3.0  # the loops are cancelled: a blocking read need not run out


class Loops:
    """Named background loops, each restarted when it ends before :meth:`stop`."""

    def __init__(self, metrics: Metrics, on_failure: Callable[[str, BaseException], None]) -> None:
        self._metrics = metrics
        self._on_failure = on_failure
        self.stopping = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._down: set[str] = set()

    def start(self, name: str, loop: Loop) -> None:
        """Run ``loop`` under ``name`` until :meth:`stop`."""
        self._tasks[name] = asyncio.create_task(self._supervise(name, loop), name=name)

    def not_running(self) -> list[str]:
        """The names of the loops that are not running now (failed and not restarted yet)."""
        return sorted(self._down | {name for name, task in self._tasks.items() if task.done()})

    async def _supervise(self, name: str, loop: Loop) -> None:
        while not self.stopping.is_set():
            try:
                await loop(self.stopping)
                if self.stopping.is_set():
                    return
                failure: BaseException = RuntimeError(f"the {name} loop returned")
            except Exception as exc:
                failure = exc
            self._down.add(name)
            self._metrics.loop_restarts.labels(name).inc()
            log.error("the %s loop stopped (%s); restarting it", name, failure)
            self._on_failure(name, failure)
            await wait_event(self.stopping, RESTART_SECONDS)
            self._down.discard(name)

    async def stop(self) -> None:
        """Stop every loop: set the event they watch, then cancel them (redis-py can swallow a
        cancellation that lands mid-command, hence the event too)."""
        self.stopping.set()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_SECONDS)
