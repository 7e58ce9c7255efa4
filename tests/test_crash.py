"""Crashes mid-stream: every message that got a 202 is delivered at least once.

A sidecar or an agent is killed with SIGKILL while messages flow (from one sender, or from
several, each with its own stream); afterwards every accepted id must have been delivered.
Duplicates are allowed (at-least-once) and reported on the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from api import Api
from conftest import Sidecars

from mas_cli.local.processes import ChildProcess, SidecarProcess

TOTAL = 300


def report(capsys: pytest.CaptureFixture[str], what: str, delivered: list[str]) -> None:
    duplicates = len(delivered) - len(set(delivered))
    with capsys.disabled():
        print(f"\n  {what}: {len(set(delivered))} delivered, {duplicates} duplicates")


async def consume_until(
    api: Api, wanted: set[str], delivered: list[str], deadline: float = 30
) -> None:
    """Ack deliveries into ``delivered`` until ``wanted`` is covered, reconnecting on drops."""
    async with asyncio.timeout(deadline):
        while not wanted <= set(delivered):
            try:
                async with contextlib.aclosing(api.deliveries()) as events:
                    async for event in events:
                        delivered.append(event["id"])
                        await api.answer(event["id"], "ack")
                        if wanted <= set(delivered):
                            return
            except (aiohttp.ClientError, AssertionError):
                await asyncio.sleep(0.1)


async def test_killing_the_senders_sidecar_loses_no_accepted_message(
    sidecars: Sidecars, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    alice_sidecar = sidecars.start("default/alice")
    alice = Api(http, alice_sidecar)
    bob = Api(http, sidecars.start("default/bob", MAS_LEASE_MS="1000"))
    accepted: list[str] = []
    delivered: list[str] = []
    consumer = asyncio.create_task(consume_until(bob, {"never"}, delivered, deadline=60))

    async def send_all() -> None:
        n = 0
        while len(accepted) < TOTAL:
            n += 1
            try:
                status, body = await alice.call(
                    "POST", "/v1/messages", {"to": "bob", "type": "seq", "payload": {"n": n}}
                )
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
                continue
            if status == 202:
                accepted.append(body["id"])

    sender = asyncio.create_task(send_all())
    while len(accepted) < TOTAL // 3:
        await asyncio.sleep(0.01)
    alice_sidecar.kill()
    await asyncio.sleep(0.3)
    alice_sidecar.start()
    await sender
    consumer.cancel()
    await consume_until(bob, set(accepted), delivered)

    assert set(accepted) <= set(delivered)
    report(capsys, "sender sidecar killed", delivered)


async def test_killing_the_receivers_sidecar_loses_no_accepted_message(
    sidecars: Sidecars, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob_sidecar = sidecars.start("default/bob", replica="bob-0", MAS_LEASE_MS="1000")
    bob = Api(http, bob_sidecar)
    accepted = [await alice.send("bob", "seq", {"n": n}) for n in range(TOTAL)]
    delivered: list[str] = []

    consumer = asyncio.create_task(consume_until(bob, set(accepted), delivered))
    while len(delivered) < TOTAL // 3:
        await asyncio.sleep(0.005)
    bob_sidecar.kill()
    await asyncio.sleep(0.3)
    bob_sidecar.start()
    await consumer

    assert set(accepted) <= set(delivered)
    report(capsys, "receiver sidecar killed", delivered)


async def test_killing_a_receiver_replica_loses_nothing_of_many_senders(
    sidecars: Sidecars, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    senders = [Api(http, sidecars.start(f"default/sender-{n}")) for n in range(3)]
    doomed = sidecars.start("default/bob", replica="bob-0", MAS_LEASE_MS="1000")
    survivor = Api(http, sidecars.start("default/bob", replica="bob-1", MAS_LEASE_MS="1000"))
    accepted = [
        await sender.send("bob", "seq", {"n": n}) for n in range(TOTAL // 3) for sender in senders
    ]
    delivered: list[str] = []

    doomed_consumer = asyncio.create_task(
        consume_until(Api(http, doomed), set(accepted), delivered)
    )
    survivor_consumer = asyncio.create_task(consume_until(survivor, set(accepted), delivered))
    while len(delivered) < TOTAL // 3:
        await asyncio.sleep(0.005)
    doomed.kill()  # its leases, in three senders' streams, run out and are reclaimed
    await survivor_consumer
    doomed_consumer.cancel()

    assert set(accepted) <= set(delivered)
    report(capsys, "one of two receiver replicas killed, three senders", delivered)


AGENT_PROGRAM = """
import asyncio, os, sys
from mas import Agent, AgentMessage

class Recorder(Agent):
    @Agent.on("seq")
    async def record(self, message: AgentMessage) -> None:
        await asyncio.sleep(0.005)
        with open(sys.argv[1], "a") as out:
            out.write(message.id + "\\n")

Recorder().run()
"""


def recorded(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_killing_the_agent_loses_no_accepted_message(
    sidecars: Sidecars, http: aiohttp.ClientSession, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    alice = Api(http, sidecars.start("default/alice"))
    bob_sidecar: SidecarProcess = sidecars.start("default/bob", MAS_LEASE_MS="1000")
    program = tmp_path / "recorder.py"
    program.write_text(AGENT_PROGRAM)
    log = tmp_path / "processed.txt"

    def agent() -> ChildProcess:
        process = ChildProcess(
            [sys.executable, str(program), str(log)],
            env={"MAS_SIDECAR_URL": bob_sidecar.url, "MAS_SIDECAR_TOKEN": bob_sidecar.token},
            log_path=tmp_path / "agent.log",
        )
        process.start()
        return process

    first = agent()
    accepted = [await alice.send("bob", "seq", {"n": n}) for n in range(TOTAL)]
    async with asyncio.timeout(30):
        while len(recorded(log)) < TOTAL // 3:
            await asyncio.sleep(0.01)
    os.kill(first.pid or 0, signal.SIGKILL)
    first.kill()
    second = agent()
    try:
        async with asyncio.timeout(30):
            while not set(accepted) <= set(recorded(log)):
                await asyncio.sleep(0.05)
    finally:
        second.stop()

    assert set(accepted) <= set(recorded(log))
    report(capsys, "agent killed", recorded(log))
