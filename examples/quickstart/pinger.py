"""The quickstart's pinger: finds an agent that can ``pong`` and pings it every second.

Each round is a request (``ping``, waiting for the ``pong`` reply) and a fire-and-forget
``note`` message. Every fifth round it also tries ``admin.shutdown``, which the quickstart's
gateway policy does not allow: its sidecar refuses it and audits the refusal.
"""

from __future__ import annotations

import asyncio
import contextlib

from mas import Agent, AgentMessage, ForbiddenError, MasError

INTERVAL = 1.0


class Pinger(Agent):
    def __init__(self) -> None:
        super().__init__()
        self._loop: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self._loop = asyncio.create_task(self.ping_forever())

    async def on_stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    async def find_ponger(self) -> str:
        while True:
            agents = await self.discover(capabilities=["pong"])
            if agents:
                print(f"found {agents[0].id}", flush=True)
                return agents[0].id
            await asyncio.sleep(INTERVAL)

    async def ping_forever(self) -> None:
        ponger = await self.find_ponger()
        n = 0
        while True:
            n += 1
            try:
                reply: AgentMessage = await self.request(ponger, "ping", {"n": n}, timeout=5.0)
                print(f"ping {n} -> {reply.type} {reply.payload} from {reply.sender}", flush=True)
                await self.send(ponger, "note", {"text": f"pinged {n} times"})
                if n % 5 == 0:
                    await self.send(ponger, "admin.shutdown", {})
            except ForbiddenError as exc:
                print(f"denied by the gateway: {exc.message}", flush=True)
            except MasError as exc:
                print(f"ping {n} failed: {exc}", flush=True)
            await asyncio.sleep(INTERVAL)


if __name__ == "__main__":
    Pinger().run()
