"""The agent program of the cost-per-agent benchmark, run by ``mas up`` (:mod:`bench.idle`).

``python idle_agents.py``: an :class:`mas.Agent` that does nothing until told: it prints
``BENCH-READY <id>`` once started, and on ``SIGUSR1`` sends ``BENCH_BURST`` messages, one
``await agent.send(...)`` at a time, to ``BENCH_NEXT`` (the next agent of a ring), then prints
``BENCH-SENT <id>``. It counts the ``bench.hop`` messages it receives and prints
``BENCH-RECEIVED <id>`` once it has ``BENCH_BURST`` of them. A signal, not a timer or a file to
poll, so that the idle agent does no work of its own; the lines reach the benchmark through
``mas up``'s output.
"""

from __future__ import annotations

import asyncio
import os
import signal

from mas import Agent, AgentMessage

READY, SENT, RECEIVED = "BENCH-READY ", "BENCH-SENT ", "BENCH-RECEIVED "


class RingAgent(Agent):
    def __init__(self) -> None:
        super().__init__()
        self.burst = int(os.environ["BENCH_BURST"])
        self.next = os.environ["BENCH_NEXT"]
        self.received = 0
        self._sending: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self._go)
        print(f"{READY}{self.id}", flush=True)

    def _go(self) -> None:
        if self._sending is None or self._sending.done():
            self._sending = asyncio.ensure_future(self._send_burst())

    async def _send_burst(self) -> None:
        for seq in range(self.burst):
            await self.send(self.next, "bench.hop", {"seq": seq, "text": "a small payload"})
        print(f"{SENT}{self.id}", flush=True)

    @Agent.on("bench.hop")
    async def hop(self, message: AgentMessage) -> None:
        self.received += 1
        if self.received == self.burst:
            print(f"{RECEIVED}{self.id}", flush=True)


if __name__ == "__main__":
    RingAgent().run()
