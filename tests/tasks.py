"""Counting the asyncio tasks a piece of code creates: a measure of its hops, not of time.

Each task a lone message creates on its way (a waiter for an event, a flush, a request) is at
least one more turn of the event loop between a message arriving and its going on, paid in full
when nothing shares it. :func:`counting_tasks` installs a task factory on the running loop that
counts every task created while it is in place, so a test can say how many tasks N sequential
messages cost, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Generator
from typing import Any


class TaskCount:
    """How many tasks were created, and the names of their coroutines."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def __len__(self) -> int:
        return len(self.created)


@contextlib.contextmanager
def counting_tasks() -> Generator[TaskCount]:
    """Count the tasks created on the running loop until the block ends."""
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    count = TaskCount()

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Future[Any]:
        count.created.append(getattr(coro, "__qualname__", repr(coro)))
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    try:
        yield count
    finally:
        loop.set_task_factory(previous)
