"""What a lone message costs the event loops on its way: the asyncio tasks created per message,
counted, not timed.

Two sidecars (the real application, on loopback ports, against the real server) and two SDK
agents run in this test's own event loop, so one task factory sees every task that the sending
agent, both sidecars and the receiving agent create while messages go one at a time: a
sequential ``await send`` delivered and acked before the next, and a sequential ``await
request`` answered by ``message.reply``. Each task is a hop, at least one more turn of an event
loop between a message arriving somewhere and its going on, paid in full by a message alone.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import test_round_trips
from aiohttp import web
from tasks import counting_tasks
from waiting import eventually

from mas import Agent
from mas_cli.local.redis_server import free_port
from mas_control.provision import register_agent
from mas_core.sidecar_token import TOKEN_ENV, new_token
from mas_sidecar.api.app import build_app
from mas_sidecar.api.http import COMPONENTS
from mas_sidecar.config import SidecarConfig

MESSAGES = 30
TOKEN = new_token()


class Sink(test_round_trips.Sink):
    """Counts notes, answers pings; knows when its sidecar holds no lease."""

    def __init__(self, url: str, token: str, runner: web.AppRunner) -> None:
        super().__init__(url, token)
        self._inbox = runner.app[COMPONENTS].inbox

    async def all_acked(self) -> None:
        """Until its sidecar holds no lease: every ack made (and counted) by then."""
        await eventually(lambda: not self._inbox.leases, "every delivery acked")


async def _sidecar(agent_id: str, redis_url: str, admin: redis.Redis) -> web.AppRunner:
    """The sidecar application of ``agent_id``, served on a free loopback port."""
    register_agent(admin, agent_id, [], [])
    port = free_port()
    config = SidecarConfig.build(
        agent_id=agent_id, port=port, redis_url=redis_url, env={TOKEN_ENV: TOKEN}
    )
    runner = web.AppRunner(build_app(config))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture
async def pair(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[tuple[Agent, Sink]]:
    runners: list[web.AppRunner] = []
    agents: list[Agent[Any]] = []
    try:
        for agent_id in ("default/alice", "default/bob"):
            runners.append(await _sidecar(agent_id, redis_url, redis_client))
        urls = [f"http://127.0.0.1:{runner.addresses[0][1]}" for runner in runners]
        sink = Sink(urls[1], TOKEN, runners[1])
        sender: Agent[Any] = Agent(sidecar_url=urls[0], sidecar_token=TOKEN)
        for agent in (sink, sender):
            await agent.start()
            agents.append(agent)
        yield sender, sink
    finally:
        for agent in reversed(agents):
            await agent.stop()
        for runner in reversed(runners):
            await runner.cleanup()


# aiohttp's own per-request tasks: the server's handler and the client's body writer (both
# started eagerly, without a turn of the loop, from Python 3.12 on).
AIOHTTP = {"RequestHandler._handle_request", "ClientRequest.write_bytes"}
# A connection accepted: once per connection an agent opens to its sidecar (a reply and the ack
# of the request before it may overlap), not per message.
CONNECTION = {"BaseSelectorEventLoop._accept_connection2", "RequestHandler.start"}
# What mas itself may create per lone message: the receiving agent runs each handler as a task
# (handlers run concurrently), and the receiving sidecar sends acks from a task of their own
# (so acks that arrive meanwhile share its MULTI, whatever happens to the request that started
# it).
OURS = {"Agent._handle": 1, "Inbox._flush_acks": 1}


def per_message(created: list[str]) -> dict[str, float]:
    """Tasks per message by name, aiohttp's per request and connections left out (at most two
    connections may open)."""
    assert sum(name in CONNECTION for name in created) <= 2 * len(CONNECTION), created
    counts = collections.Counter(n for n in created if n not in AIOHTTP and n not in CONNECTION)
    return {name: count / MESSAGES for name, count in counts.items()}


async def test_a_lone_message_costs_only_its_handler_and_its_ack_a_task(
    pair: tuple[Agent, Sink],
) -> None:
    sender, sink = pair
    await sender.send("bob", "note", {"n": -1})  # connections, streams, caches
    await sink.notes.get()
    await sink.all_acked()
    with counting_tasks() as tasks:
        for n in range(MESSAGES):
            await sender.send("bob", "note", {"n": n})
            await sink.notes.get()
        await sink.all_acked()
    assert per_message(tasks.created) == OURS, tasks.created


async def test_a_lone_request_costs_only_its_handler_and_its_ack_a_task(
    pair: tuple[Agent, Sink],
) -> None:
    sender, sink = pair
    for n in range(3):  # the reply stream, connections (an ack may overlap a reply), caches
        await sender.request("bob", "ping", {"n": -n})
    await sink.all_acked()
    with counting_tasks() as tasks:
        for n in range(MESSAGES):
            assert (await sender.request("bob", "ping", {"n": n})).payload == {"n": n}
        await sink.all_acked()
    assert per_message(tasks.created) == OURS, tasks.created
