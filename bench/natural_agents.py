"""The two agent programs of the natural-path benchmark, run by ``mas up`` (:mod:`bench.natural`).

``python natural_agents.py sink``: an :class:`mas.Agent` that counts ``bench.data`` messages,
answers each ``bench.ping`` request with ``message.reply`` (the payload back), and answers
``bench.count`` (how many messages it got, and when the last came) and ``bench.stages`` (its
sidecar's stage timings, read from the sidecar's ``/metrics``) the same way.

``python natural_agents.py sender``: an :class:`mas.Agent` written the natural way. After a
warm-up it sends ``messages`` messages one at a time (``await agent.send(...)``), asks the sink
until all of them arrived, then makes ``requests`` sequential ``await agent.request(...)``
calls. Around each phase it reads both sidecars' stage timings; at the end it prints one line,
``BENCH-RESULT <json>``, which ``mas up`` copies to its output, and exits 0 (``mas up`` leaves a
program that exits 0 completed). Times are ``time.monotonic()``, one clock for every process of
the machine.

Counts come from the environment (``BENCH_MESSAGES``, ``BENCH_REQUESTS``, ``BENCH_SINK``).
The program imports only the SDK and aiohttp, as an agent would (and the bench's ``/proc``
reader: at the start and end of each phase the sender reads the CPU time of every process
``mas up`` runs, its siblings, so the result says how much CPU each used per message whatever
else the machine was doing).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.procstat import cpu_seconds
from bench.workload import RESULT_MARK, payload
from mas import Agent, AgentMessage

_SUMMARIES = ("mas_stage_seconds", "mas_http_request_duration_seconds")


async def sidecar_timings() -> dict[str, list[float]]:
    """``{"<summary>{<label>}": [seconds, count]}`` of this agent's sidecar, from ``/metrics``:
    the stage timings and the HTTP request durations by route."""
    url = os.environ["MAS_SIDECAR_URL"] + "/metrics"
    headers = {"Authorization": f"Bearer {os.environ['MAS_SIDECAR_TOKEN']}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as answer:
        text = await answer.text()
    timings: dict[str, list[float]] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        for summary in _SUMMARIES:
            for suffix, index in (("_sum", 0), ("_count", 1)):
                if name.startswith(summary + suffix + "{"):
                    key = summary + name[len(summary + suffix) :]
                    timings.setdefault(key, [0.0, 0.0])[index] = float(value)
    return timings


def difference(after: dict[str, list[float]], before: dict[str, list[float]]) -> dict[str, Any]:
    """Per timing, ``[seconds, count]`` of what happened between two readings."""
    return {
        key: [value[0] - before.get(key, [0.0, 0.0])[0], value[1] - before.get(key, [0, 0])[1]]
        for key, value in after.items()
        if value[1] > before.get(key, [0.0, 0.0])[1]
    }


def processes_cpu() -> dict[str, float]:
    """CPU seconds so far of ``mas up`` and of every process it runs (this one among them), by
    role: ``mas up``, ``sidecar <agent>`` and ``agent <role>``."""
    parent = os.getppid()
    with open(f"/proc/{parent}/task/{parent}/children", encoding="ascii") as children:
        pids = [int(pid) for pid in children.read().split()]
    used = {"mas up": cpu_seconds(parent)}
    for pid in pids:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = [part.decode() for part in cmdline.read().split(b"\0") if part]
        if "--agent-id" in argv:
            role = "sidecar " + argv[argv.index("--agent-id") + 1].rpartition("/")[2]
        elif argv[-2:-1] and argv[-2].endswith(Path(__file__).name):
            role = "agent " + argv[-1]
        else:
            continue
        used[role] = used.get(role, 0.0) + cpu_seconds(pid)
    return used


def cpu_between(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {role: seconds - before.get(role, 0.0) for role, seconds in after.items()}


class Sink(Agent):
    def __init__(self) -> None:
        super().__init__()
        self.received = 0
        self.last_at = 0.0
        self.handler_seconds = 0.0
        self.handled = 0

    @Agent.on("bench.data")
    async def data(self, message: AgentMessage) -> None:
        self.received += 1
        self.last_at = time.monotonic()

    @Agent.on("bench.ping")
    async def ping(self, message: AgentMessage) -> None:
        started = time.monotonic()
        await message.reply("bench.pong", message.payload)
        self.handler_seconds += time.monotonic() - started
        self.handled += 1

    @Agent.on("bench.count")
    async def count(self, message: AgentMessage) -> None:
        await message.reply("bench.counted", {"received": self.received, "last_at": self.last_at})

    @Agent.on("bench.stages")
    async def stages(self, message: AgentMessage) -> None:
        answer = {
            "timings": await sidecar_timings(),
            "handler": [self.handler_seconds, self.handled],
        }
        await message.reply("bench.staged", answer)


class Sender(Agent):
    async def snapshot(self, sink: str) -> dict[str, Any]:
        reply = await self.request(sink, "bench.stages", {})
        return {"sender": await sidecar_timings(), "sink": reply.payload}

    async def measure(self, sink: str, messages: int, requests: int) -> dict[str, Any]:
        for seq in range(20):  # warm-up: connections, caches, the reply stream
            await self.send(sink, "bench.data", payload(seq))
            await self.request(sink, "bench.ping", payload(seq))
        await self.until_received(sink, 20)
        before = await self.snapshot(sink)
        cpu_start = processes_cpu()
        started = time.monotonic()
        for seq in range(messages):
            await self.send(sink, "bench.data", payload(seq))
        sent = time.monotonic()
        last_at = await self.until_received(sink, 20 + messages)
        cpu_one_way = processes_cpu()
        one_way = await self.snapshot(sink)
        latencies = []
        cpu_requests = processes_cpu()
        for seq in range(requests):
            began = time.perf_counter()
            await self.request(sink, "bench.ping", payload(seq))
            latencies.append(time.perf_counter() - began)
        cpu_end = processes_cpu()
        round_trip = await self.snapshot(sink)
        return {
            "messages": messages,
            "send_seconds": sent - started,
            "delivered_seconds": last_at - started,
            "latencies": latencies,
            "one_way_stages": _stages(one_way, before),
            "round_trip_stages": _stages(round_trip, one_way),
            "one_way_cpu": cpu_between(cpu_one_way, cpu_start),
            "round_trip_cpu": cpu_between(cpu_end, cpu_requests),
        }

    async def until_live(self, capability: str) -> None:
        """Wait until an agent with ``capability`` is in discovery."""
        for _ in range(600):
            if await self.discover([capability]):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"no agent with capability {capability!r} came up")

    async def until_received(self, sink: str, count: int) -> float:
        """When the sink got its ``count``-th message (asking until it has)."""
        while True:
            reply = await self.request(sink, "bench.count", {})
            if reply.payload["received"] >= count:
                return float(reply.payload["last_at"])
            await asyncio.sleep(0.05)


def _stages(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    sink_after, sink_before = after["sink"], before["sink"]
    handler = [a - b for a, b in zip(sink_after["handler"], sink_before["handler"], strict=True)]
    return {
        "sender": difference(after["sender"], before["sender"]),
        "sink": difference(sink_after["timings"], sink_before["timings"]),
        "sink_handler": handler,
    }


async def run_sender() -> None:
    agent = Sender()
    await agent.start()
    try:
        sink = os.environ["BENCH_SINK"]
        await agent.until_live(os.environ.get("BENCH_SINK_CAPABILITY", "bench-sink"))
        result = await agent.measure(
            sink, int(os.environ["BENCH_MESSAGES"]), int(os.environ["BENCH_REQUESTS"])
        )
    finally:
        await agent.stop()
    print(RESULT_MARK + orjson.dumps(result).decode(), flush=True)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed (as :meth:`mas.Agent.run` uses), else asyncio's."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> int:
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "sink":
        Sink().run()
    elif role == "sender":
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(run_sender())
    else:
        print("usage: natural_agents.py sink|sender", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
