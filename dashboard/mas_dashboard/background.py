"""The dashboard served from a thread of its own, for a program that is not asynchronous.

``mas up``'s supervisor is a synchronous loop: :class:`DashboardThread` runs
:func:`mas_dashboard.server.serving` on an event loop in a daemon thread, gives the URL once it
listens, and stops it on :meth:`DashboardThread.stop`.
"""

from __future__ import annotations

import asyncio
import threading

from mas_dashboard.server import DashboardSettings, serving


class DashboardThread:
    """One dashboard in a thread (see the module docstring)."""

    def __init__(self, settings: DashboardSettings) -> None:
        self._settings = settings
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="mas-dashboard", daemon=True)

    def start(self, timeout: float = 30.0) -> str:
        """Start serving; the URL. RuntimeError when it could not start."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the dashboard did not start within {timeout:g}s")
        if self._failure is not None:
            raise RuntimeError(f"the dashboard did not start: {self._failure}")
        return self.url

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            async with serving(self._settings) as url:
                self.url = url
                self._ready.set()
                await self._stop.wait()
        except OSError as exc:  # the port is taken, or the host is not ours
            self._failure = exc
            self._ready.set()

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
