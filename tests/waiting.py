"""Waiting for what other processes do, without claiming how fast they do it.

A test waits for an outcome (a delivery, a dead letter, a policy in force, a condition in an
object's status), never for a fixed time: :func:`eventually` polls until the condition holds.
Its deadline only guards against a hang, so that a condition that never comes fails the test
with what it waited for and the last value seen; it is far beyond how long any of these takes
on a loaded machine, and no test asserts on elapsed time (speed is measured in ``bench/``).
A sleep in a test is only ever the time a *negative* check gives the system to do what it must
not do (a third delivery, a forged reply being accepted): a slow machine can make such a check
pass without proving much, never fail.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

GUARD_SECONDS = 60.0
_POLL_SECONDS = 0.02


async def eventually(
    check: Callable[[], Any], what: str = "", *, guard: float = GUARD_SECONDS
) -> Any:
    """Poll ``check`` (a function, or a coroutine function) until it returns something truthy,
    and return that. While the thing looked at does not exist yet (a ``KeyError``,
    ``LookupError`` or ``TypeError`` from a missing part), it counts as not yet."""
    deadline = time.monotonic() + guard
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if inspect.isawaitable(last):
                last = await last
        except (LookupError, TypeError):
            last = None
        if last:
            return last
        await asyncio.sleep(_POLL_SECONDS)
    raise AssertionError(f"never happened: {what or check}; last seen: {last!r}")
