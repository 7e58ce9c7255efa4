"""What a lone message costs the server: Redis commands and round trips per message on the
natural paths (sequential ``await agent.send(...)``, and ``await agent.request(...)`` answered by
``message.reply``), counted, not timed.

Two SDK agents on signed sidecars (so the receiver verifies and runs the replay guard, and both
sides keep their audit chains) exchange messages one at a time; the server's own counters
(``INFO stats`` and ``INFO commandstats``) are read before and after. ``total_reads_processed``
counts the socket reads the server served: one per round trip of a client (a pipeline arrives
in one read), so it is the number of round trips all processes made. The background loops of
the sidecars (reclaim ticks, idle reads, looks at the senders set, heartbeats) add a few per
second; the bounds leave room for them on a slow machine, and fail on one round trip per
message more than the paths need.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import redis
from policies import publish
from waiting import GUARD_SECONDS, eventually

from mas import Agent, AgentMessage
from mas_cli.local.processes import SidecarProcess
from mas_core.identity.credentials import create_anchor, issue_agent_credentials
from mas_core.keys import AgentKeys

if TYPE_CHECKING:
    from conftest import Sidecars

MESSAGES = 200
REQUESTS = 100
SIGNED = {"rules": [{"name": "all", "action": "allow"}], "signing": {"required": True}}


class Sink(Agent):
    """Counts notes; answers each ping with ``message.reply``."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(sidecar_url=url, sidecar_token=token)
        self.notes: asyncio.Queue[AgentMessage] = asyncio.Queue()

    @Agent.on("note")
    async def note(self, message: AgentMessage) -> None:
        self.notes.put_nowait(message)

    @Agent.on("ping")
    async def ping(self, message: AgentMessage) -> None:
        await message.reply("pong", message.payload)


class Server:
    """The server's counters, and the commands this test itself sends to read them."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.own_reads = 0

    def counters(self) -> dict[str, int]:
        """Round trips served so far and calls per command (``rt`` and ``cmd:<name>``)."""
        self.own_reads += 2
        stats = self._client.info("stats")
        commands = self._client.info("commandstats")
        counted = {
            f"cmd:{name.removeprefix('cmdstat_')}": stat["calls"] for name, stat in commands.items()
        }
        return {"rt": int(stats["total_reads_processed"]), **counted}

    def acked(self, stream: str) -> bool:
        """Whether ``stream`` holds no entry (acked entries are deleted)."""
        self.own_reads += 1
        return int(self._client.xlen(stream)) == 0


def per_message(
    before: dict[str, int], after: dict[str, int], own: int, n: int
) -> dict[str, float]:
    """Counter deltas per message (the test's own round trips taken out)."""
    delta = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    delta["rt"] -= own
    return {key: round(value / n, 2) for key, value in delta.items() if value}


async def verified(sidecar: SidecarProcess) -> int:
    """How many messages ``sidecar`` counted in its ``verify`` stage (``/metrics``)."""
    headers = {"Authorization": f"Bearer {sidecar.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(sidecar.url + "/metrics", headers=headers) as answer,
    ):
        text = await answer.text()
    found = re.search(r'^mas_stage_seconds_count\{stage="verify"\} (\S+)$', text, re.MULTILINE)
    assert found is not None
    return int(float(found.group(1)))


@pytest.fixture
def pair(
    sidecars: Sidecars, redis_client: redis.Redis, tmp_path: Path
) -> tuple[SidecarProcess, SidecarProcess]:
    publish(redis_client, **SIGNED)
    anchor = create_anchor(tmp_path / "anchor")
    started = []
    for agent_id in ("default/alice", "default/bob"):
        directory = tmp_path / agent_id.replace("/", "_")
        issue_agent_credentials(anchor, directory, agent_id=agent_id, ttl_seconds=3600)
        started.append(sidecars.start(agent_id, MAS_CREDENTIALS_DIR=str(directory)))
    return started[0], started[1]


async def test_sequential_sends_cost_few_round_trips(
    pair: tuple[SidecarProcess, SidecarProcess],
    redis_client: redis.Redis,
    started: Callable[[Agent[Any]], Any],
) -> None:
    alice_sidecar, bob_sidecar = pair
    alice = await started(Agent(sidecar_url=alice_sidecar.url, sidecar_token=alice_sidecar.token))
    bob = await started(Sink(bob_sidecar.url, bob_sidecar.token))
    server = Server(redis_client)
    stream = AgentKeys("default/bob").inbox("default/alice")
    for _ in range(3):  # warm-up: discovery of the sender's stream, first contact
        await alice.send("bob", "note", {"n": 0})
        await asyncio.wait_for(bob.notes.get(), GUARD_SECONDS)
    await eventually(lambda: server.acked(stream))

    server.own_reads = 0
    verified_before = await verified(bob_sidecar)
    before = server.counters()
    for n in range(MESSAGES):
        await alice.send("bob", "note", {"n": n})
        # Each delivered before the next is sent, so no read or ack takes two at once.
        assert (await asyncio.wait_for(bob.notes.get(), GUARD_SECONDS)).payload == {"n": n}
    await eventually(lambda: server.acked(stream))
    after = server.counters()
    cost = per_message(before, after, server.own_reads, MESSAGES)
    print("one-way, per message:", cost)

    # Sender: one pipeline (the message and its audit entry). Receiver: the read, the replay
    # guard with the receipt's audit entry, the ack's MULTI. Plus the background loops.
    assert cost["rt"] <= 4.5
    assert cost.get("cmd:fcall", 0) <= 3.2  # the sender's two appends, the receive check
    assert cost.get("cmd:exec", 0) <= 1.05  # the ack
    assert await verified(bob_sidecar) - verified_before == MESSAGES  # each timed once


async def test_sequential_requests_cost_few_round_trips(
    pair: tuple[SidecarProcess, SidecarProcess],
    redis_client: redis.Redis,
    started: Callable[[Agent[Any]], Any],
) -> None:
    alice_sidecar, bob_sidecar = pair
    alice = await started(Agent(sidecar_url=alice_sidecar.url, sidecar_token=alice_sidecar.token))
    await started(Sink(bob_sidecar.url, bob_sidecar.token))
    server = Server(redis_client)
    stream = AgentKeys("default/bob").inbox("default/alice")
    for _ in range(3):  # warm-up: the reply stream, discovery, first contact
        await alice.request("bob", "ping", {"n": 0}, timeout=30)
    await eventually(lambda: server.acked(stream))

    server.own_reads = 0
    before = server.counters()
    for n in range(REQUESTS):
        reply = await alice.request("bob", "ping", {"n": n}, timeout=30)
        assert reply.payload == {"n": n}
    await eventually(lambda: server.acked(stream))
    after = server.counters()
    cost = per_message(before, after, server.own_reads, REQUESTS)
    print("request/reply, per round trip:", cost)

    # The request: as a one-way message (1 + 3); the reply: one pipeline from the responder,
    # and at the requester the read (which also deletes the replies read before) and the
    # replay guard with the receipt.
    assert cost["rt"] <= 7.6
    assert cost.get("cmd:fcall", 0) <= 6.2
    # The replies handled are deleted all the same (the last one with the next read).
    [replies] = redis_client.keys(AgentKeys("default/alice").replies("*", "default/bob"))
    await eventually(lambda: redis_client.xlen(replies) == 0)
