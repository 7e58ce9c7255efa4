"""Small asyncio helpers for the sidecar's background loops.

On Python 3.11, ``asyncio.timeout`` can turn an outside cancellation that lands together with
its deadline into a ``TimeoutError``; a loop that suppresses the timeout then never stops.
These helpers wait with ``asyncio.wait``, which never raises on a timeout, so cancellation
always propagates. Used by the inbox loops and the request route.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; True when it is set."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()
    return event.is_set()
