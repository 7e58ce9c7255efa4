"""The A2A tasks of one sidecar replica: a call whose reply did not come within the call.

A task remembers who asked (only that client may read or cancel it), the mas request it
stands for, its state and its status message: the handler's latest progress report while it
works, the answer once the agent answered. A call waits on :meth:`Task.changed` (until the task
finishes); a stream follows it with :meth:`Task.watch`, which hands it every change in order
(at most ``WATCH_BACKLOG`` it has not written yet: a slower reader loses the oldest progress,
never the last change). The store keeps at most ``MAX_TASKS``, dropping the oldest
finished ones first, and a finished task for ``KEEP_SECONDS``. Tasks live in the replica that
took the call: ``GetTask`` and ``CancelTask`` must reach the same replica (one replica, or a
Service with client-IP session affinity).

Used by :mod:`mas_sidecar.api.a2a.calls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mas_sidecar.api.a2a.protocol import TERMINAL, task_document

MAX_TASKS = 10_000
KEEP_SECONDS = 3600.0
WATCH_BACKLOG = 64  # changes a stream has not written yet, at most


@dataclass
class Task:
    """One task; ``request_id`` is the id of the mas request it stands for."""

    id: str
    context_id: str
    principal: str
    request_id: str
    state: str = "TASK_STATE_WORKING"
    message: dict[str, Any] | None = None
    updated_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    finished_at: float | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _watchers: set[asyncio.Queue[dict[str, Any]]] = field(default_factory=set)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def settle(self, state: str, message: dict[str, Any] | None) -> bool:
        """Move to ``state`` with ``message``; False when the task had finished already."""
        if self.finished:
            return False
        self.finished_at = time.monotonic()
        self._change(state, message)
        self._changed.set()
        return True

    def progress(self, message: dict[str, Any]) -> None:
        """The handler reported progress: still working, ``message`` its status message
        (nothing changes once the task has finished)."""
        if not self.finished:
            self._change("TASK_STATE_WORKING", message)

    def _change(self, state: str, message: dict[str, Any] | None) -> None:
        self.state, self.message = state, message
        self.updated_ms = time.time_ns() // 1_000_000
        document = self.document()
        for watcher in self._watchers:
            if watcher.full():
                watcher.get_nowait()
            watcher.put_nowait(document)

    async def changed(self) -> None:
        """Wait until the task finishes (at once when it has)."""
        await self._changed.wait()

    @contextlib.contextmanager
    def watch(self) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        """The task's documents after each change from now on, in order, while in the block."""
        watcher: asyncio.Queue[dict[str, Any]] = asyncio.Queue(WATCH_BACKLOG)
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)

    def document(self) -> dict[str, Any]:
        return task_document(
            task_id=self.id, context_id=self.context_id, state=self.state,
            message=self.message, at_ms=self.updated_ms,
        )  # fmt: skip


class Tasks:
    """The tasks of this replica, by id."""

    def __init__(self) -> None:
        self._tasks: OrderedDict[str, Task] = OrderedDict()

    def add(self, task: Task) -> Task:
        self._evict()
        self._tasks[task.id] = task
        return task

    def get(self, task_id: str, principal: str) -> Task | None:
        """The task ``task_id`` if ``principal`` asked it, else None (as if there were none)."""
        task = self._tasks.get(task_id)
        return task if task is not None and task.principal == principal else None

    def _evict(self) -> None:
        horizon = time.monotonic() - KEEP_SECONDS
        for task_id, task in list(self._tasks.items()):
            if task.finished_at is not None and task.finished_at < horizon:
                del self._tasks[task_id]
        if len(self._tasks) < MAX_TASKS:
            return
        finished = [task_id for task_id, task in self._tasks.items() if task.finished]
        for task_id in (finished or list(self._tasks))[: len(self._tasks) - MAX_TASKS + 1]:
            del self._tasks[task_id]
