"""The original framework's side of the comparison: run under mas-framework 0.3.4's interpreter.

Not part of this project's code: :mod:`bench.framework` runs this file with the Python ≥ 3.13
interpreter that has ``mas-framework==0.3.4`` installed from PyPI, where ``import mas`` is that
framework (written against its public API as its README shows it). Three roles, one process each:

* ``gateway URL``: the framework's registry service and its gateway (every feature it turns on
  by default: authentication, authorization, rate limiting raised far above the load, DLP,
  signing, audit, circuit breakers), with the two agents allowed to talk; prints ``READY``
  and runs until SIGINT or SIGTERM;
* ``sink URL``: counts ``bench.data`` messages, replies to ``bench.ping`` with the payload,
  and to ``bench.count`` with how many messages came and when the last did;
* ``sender URL MESSAGES REQUESTS``: after a warm-up, sequential ``await agent.send`` and
  sequential ``await agent.request``, measured as :mod:`bench.natural_agents` does; prints
  ``BENCH-RESULT <json>`` and exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

from workload import RESULT_MARK, payload  # bench/workload.py: this script runs in that folder

from mas import Agent, MASService  # the framework's package under its own interpreter
from mas.gateway import GatewayService
from mas.gateway.config import GatewaySettings, RateLimitSettings, RedisSettings

SENDER, SINK = "fw-sender", "fw-sink"


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def gateway(url: str) -> None:
    service = MASService(redis_url=url)
    await service.start()
    settings = GatewaySettings(
        redis=RedisSettings(url=url),
        rate_limit=RateLimitSettings(per_minute=100_000_000, per_hour=1_000_000_000),
    )
    gate = GatewayService(settings=settings)
    await gate.start()
    await gate.auth_manager().allow_bidirectional(SENDER, SINK)
    print("READY", flush=True)
    try:
        await until_signalled()
    finally:
        await gate.stop()
        await service.stop()


class Sink(Agent):
    received = 0
    last_at = 0.0

    @Agent.on("bench.data")
    async def data(self, message: Any, _: Any) -> None:
        Sink.received += 1
        Sink.last_at = time.monotonic()

    @Agent.on("bench.ping")
    async def ping(self, message: Any, _: Any) -> None:
        await message.reply("bench.pong", message.data)

    @Agent.on("bench.count")
    async def count(self, message: Any, _: Any) -> None:
        await message.reply("bench.counted", {"received": Sink.received, "last_at": Sink.last_at})


async def sink(url: str) -> None:
    agent = Sink(SINK, capabilities=["bench-sink"], redis_url=url)
    await agent.start()
    print("READY", flush=True)
    try:
        await until_signalled()
    finally:
        await agent.stop()


async def until_received(agent: Agent, count: int) -> float:
    while True:
        reply = await agent.request(SINK, "bench.count", {}, timeout=30)
        if reply.data["received"] >= count:
            return float(reply.data["last_at"])
        await asyncio.sleep(0.05)


async def sender(url: str, messages: int, requests: int) -> None:
    agent = Agent(SENDER, redis_url=url)
    await agent.start()
    try:
        for seq in range(20):
            await agent.send(SINK, "bench.data", payload(seq))
            await agent.request(SINK, "bench.ping", payload(seq), timeout=30)
        await until_received(agent, 20)
        started = time.monotonic()
        for seq in range(messages):
            await agent.send(SINK, "bench.data", payload(seq))
        sent = time.monotonic()
        last_at = await until_received(agent, 20 + messages)
        latencies = []
        for seq in range(requests):
            began = time.perf_counter()
            await agent.request(SINK, "bench.ping", payload(seq), timeout=30)
            latencies.append(time.perf_counter() - began)
    finally:
        await agent.stop()
    result = {
        "messages": messages,
        "send_seconds": sent - started,
        "delivered_seconds": last_at - started,
        "latencies": latencies,
    }
    print(RESULT_MARK + json.dumps(result), flush=True)


def main() -> int:
    role, url = sys.argv[1], sys.argv[2]
    if role == "gateway":
        asyncio.run(gateway(url))
    elif role == "sink":
        asyncio.run(sink(url))
    else:
        asyncio.run(sender(url, int(sys.argv[3]), int(sys.argv[4])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
