"""Long-running handlers in the SDK: lease renewal, lost leases, timeouts, idempotent handling.

Real sidecars with short leases (``MAS_LEASE_MS``) and SDK agents, in this test's event loop or
as agent processes that get SIGKILLed. Nothing is asserted about elapsed time: outcomes are
counted (executions, deliveries, acks, nacks, extend requests) once they happened.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from api import Api, value_of
from waiting import eventually

from mas import Agent, AgentMessage, LeaseLostError
from mas_cli.local.processes import ChildProcess, SidecarProcess

if TYPE_CHECKING:
    from conftest import Sidecars

LEASE_MS = 1500
STALL_LEASE_MS = 500
REQUESTS = "mas_http_requests_total"
BATCH_EXTEND = REQUESTS + '{method="POST",route="/v1/deliveries/extend",status="200"}'
SINGLE_EXTEND = REQUESTS + '{method="POST",route="/v1/deliveries/{id}/extend"'
NACKS = REQUESTS + '{method="POST",route="/v1/deliveries/{id}/nack"'


class Thinker(Agent):
    """Thinks about each ``think`` message for ``seconds`` (an LLM call, say), or until
    ``release`` is set; records each run that starts and each that ends."""

    def __init__(
        self, sidecar: SidecarProcess, *, seconds: float = 0.0, concurrency: int = 16
    ) -> None:
        super().__init__(
            sidecar_url=sidecar.url, sidecar_token=sidecar.token, concurrency=concurrency
        )
        self.seconds = seconds
        self.release = asyncio.Event()
        self.started: list[AgentMessage] = []
        self.finished: list[AgentMessage] = []

    @Agent.on("think")
    async def think(self, message: AgentMessage) -> None:
        self.started.append(message)
        if self.seconds:
            await asyncio.sleep(self.seconds)
        else:
            await self.release.wait()
        self.finished.append(message)


def credentials(sidecar: SidecarProcess) -> dict[str, str]:
    return {"sidecar_url": sidecar.url, "sidecar_token": sidecar.token}


async def metrics_of(api: Api) -> str:
    """The sidecar's metrics, in the text exposition format."""
    async with api.session.get(api.base_url + "/metrics", headers=api.headers) as answer:
        assert answer.status == 200
        return await answer.text()


async def acks_of(api: Api, count: int) -> bool:
    """Whether the sidecar's agent has acked ``count`` deliveries."""
    return value_of(await metrics_of(api), "mas_acks_total") == count


def counted(metrics: str, prefix: str) -> float:
    """The sum of the samples whose line starts with ``prefix`` (labels included)."""
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix))


async def test_a_handler_running_three_leases_runs_once_while_a_second_replica_waits(
    sidecars: Sidecars, http: aiohttp.ClientSession, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(Agent(**credentials(sidecars.start("default/alice"))))
    replicas = [
        sidecars.start("default/bob", replica=f"bob-{n}", MAS_LEASE_MS=str(LEASE_MS))
        for n in range(2)
    ]
    thinkers = [await started(Thinker(bob, seconds=3 * LEASE_MS / 1000)) for bob in replicas]

    sent = [await alice.send("bob", "think", {"n": n}) for n in range(3)]

    await eventually(lambda: sum(len(t.finished) for t in thinkers) == 3, "three runs finished")
    await asyncio.sleep(LEASE_MS / 1000)  # room for a second run that must not come
    runs = [message for thinker in thinkers for message in thinker.started]
    assert sorted(message.id for message in runs) == sorted(sent)
    assert [message.attempt for message in runs] == [1, 1, 1]
    redeliveries = acks = 0.0
    for bob in replicas:
        metrics = await metrics_of(Api(http, bob))
        redeliveries += value_of(metrics, "mas_redeliveries_total")
        acks += value_of(metrics, "mas_acks_total")
    assert (redeliveries, acks) == (0, 3)


async def test_renewal_extends_every_running_delivery_in_one_request_per_tick(
    sidecars: Sidecars, http: aiohttp.ClientSession, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(Agent(**credentials(sidecars.start("default/alice"))))
    bob_api = Api(http, sidecars.start("default/bob", MAS_LEASE_MS=str(LEASE_MS)))
    for n in range(6):
        await alice.send("bob", "think", {"n": n})
    bob = await started(Thinker(bob_api.sidecar))
    await eventually(lambda: len(bob.started) == 6, "six handlers running")

    async def three_ticks() -> str | None:
        metrics = await metrics_of(bob_api)
        return metrics if counted(metrics, BATCH_EXTEND) >= 3 else None

    metrics = await eventually(three_ticks, "three renewal requests")
    bob.release.set()
    await eventually(lambda: acks_of(bob_api, 6), "six deliveries acked")

    requests = counted(metrics, BATCH_EXTEND)
    extended = value_of(metrics, "mas_lease_extensions_total")
    assert counted(metrics, SINGLE_EXTEND) == 0
    assert extended >= 6 * (requests - 1), "each request renews every running handler's lease"
    assert value_of(await metrics_of(bob_api), "mas_redeliveries_total") == 0


class Stalling(Agent):
    """Blocks its event loop (a CPU-bound step, say) for longer than the lease on the first
    attempt, so the lease runs out under it (the sidecar delivers the message again); then
    waits. Answers later attempts at once."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        super().__init__(sidecar_url=sidecar.url, sidecar_token=sidecar.token)
        self.cancelled: list[bool] = []  # lease_lost, as each cancellation found it
        self.attempts: list[int] = []

    @Agent.on("think")
    async def think(self, message: AgentMessage) -> None:
        self.attempts.append(message.attempt)
        if message.attempt > 1:
            return
        time.sleep(2 * STALL_LEASE_MS / 1000)  # noqa: ASYNC251 - the point: the loop stalls
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(message.lease_lost.is_set())
            raise


async def test_a_handler_whose_lease_ran_out_is_cancelled_with_lease_lost_set(
    sidecars: Sidecars, http: aiohttp.ClientSession, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(Agent(**credentials(sidecars.start("default/alice"))))
    bob_api = Api(http, sidecars.start("default/bob", MAS_LEASE_MS=str(STALL_LEASE_MS)))
    bob = await started(Stalling(bob_api.sidecar))

    await alice.send("bob", "think")

    await eventually(lambda: bob.attempts == [1, 2], "the message delivered again")
    await eventually(lambda: bob.cancelled, "the first run cancelled")
    assert bob.cancelled == [True]
    await eventually(lambda: acks_of(bob_api, 1), "the second delivery acked")
    assert counted(await metrics_of(bob_api), NACKS) == 0, "the lost one is not nacked"


class Careful(Agent):
    """Makes sure it still holds the message's lease (``extend``) before its side effect, once
    ``proceed`` is set."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        super().__init__(sidecar_url=sidecar.url, sidecar_token=sidecar.token)
        self.proceed = asyncio.Event()
        self.started: list[AgentMessage] = []
        self.lost: list[tuple[LeaseLostError, bool]] = []
        self.side_effects = 0

    @Agent.on("think")
    async def think(self, message: AgentMessage) -> None:
        self.started.append(message)
        await self.proceed.wait()
        try:
            await message.extend()
        except LeaseLostError as exc:
            self.lost.append((exc, message.lease_lost.is_set()))
            raise
        self.side_effects += 1


async def test_extend_raises_lease_lost_when_the_sidecar_no_longer_holds_the_lease(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(Agent(**credentials(sidecars.start("default/alice"))))
    bob_sidecar = sidecars.start("default/bob")  # 30 s: not taken over again during the test
    bob = await started(Careful(bob_sidecar))
    await alice.send("bob", "think")
    await eventually(lambda: bob.started, "the handler running")

    bob_sidecar.kill()  # its leases go with it
    await asyncio.to_thread(bob_sidecar.start)
    bob.proceed.set()

    await eventually(lambda: bob.lost, "the lease found lost")
    [(_, lease_lost)] = bob.lost
    assert lease_lost
    assert bob.side_effects == 0


class Bounded(Agent):
    """Waits forever on the first attempt, under a timeout; answers the second at once."""

    def __init__(self, sidecar: SidecarProcess, extend_to: float = 0.0) -> None:
        super().__init__(sidecar_url=sidecar.url, sidecar_token=sidecar.token)
        self.extend_to = extend_to
        self.attempts: list[int] = []
        self.cancelled = 0

    @Agent.on("think", timeout=0.3)
    async def think(self, message: AgentMessage) -> None:
        self.attempts.append(message.attempt)
        if message.attempt > 1:
            return
        if self.extend_to:
            await message.extend(self.extend_to)
        try:
            await asyncio.sleep(self.extend_to / 2 or 3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_a_handler_past_its_timeout_is_cancelled_and_its_message_nacked(
    sidecars: Sidecars, http: aiohttp.ClientSession, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(Agent(**credentials(sidecars.start("default/alice"))))
    bob_api = Api(http, sidecars.start("default/bob"))  # a 30 s lease: the nack brings it back
    bob = await started(Bounded(bob_api.sidecar))

    await alice.send("bob", "think")

    await eventually(lambda: bob.attempts == [1, 2], "the message delivered again")
    assert bob.cancelled == 1
    await eventually(lambda: acks_of(bob_api, 1), "the second delivery acked")
    assert value_of(await metrics_of(bob_api), "mas_nacks_total") == 1


async def test_extend_gives_a_handler_more_time_than_its_timeout(
    sidecars: Sidecars, http: aiohttp.ClientSession, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(Agent(**credentials(sidecars.start("default/alice"))))
    bob_api = Api(http, sidecars.start("default/bob"))
    bob = await started(Bounded(bob_api.sidecar, extend_to=1.2))  # runs 0.6 s, past its 0.3 s

    await alice.send("bob", "think")

    await eventually(lambda: acks_of(bob_api, 1), "the message acked")
    assert (bob.attempts, bob.cancelled) == ([1], 0)
    assert value_of(await metrics_of(bob_api), "mas_nacks_total") == 0


AGENT_PROGRAM = """
import asyncio, os, signal, sys
from mas import Agent, AgentMessage, SidecarClient

journal, mode = sys.argv[1], sys.argv[2]

def note(line: str) -> None:
    with open(journal, "a") as out:
        out.write(line + "\\n")

if mode == "crash-before-ack":  # dies right after the handler returned, before its ack
    async def crash(self: SidecarClient, delivery_id: str, *_: object) -> None:
        note(f"crashed {delivery_id}")
        os.kill(os.getpid(), signal.SIGKILL)
    SidecarClient.ack = crash

class Worker(Agent):
    @Agent.on("think")
    async def think(self, message: AgentMessage) -> None:
        note(f"started {message.id} {message.attempt}")
        if mode == "hang":
            await asyncio.Event().wait()

    @Agent.on("effect", idempotent=True)
    async def effect(self, message: AgentMessage) -> None:
        note(f"effect {message.id} {message.attempt}")

Worker().run()
"""


def journal(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def agent_process(tmp_path: Path) -> Any:
    """Starts the agent program above against a sidecar, in a mode; stops them all after."""
    program = tmp_path / "worker.py"
    program.write_text(AGENT_PROGRAM)
    processes: list[ChildProcess] = []

    def start(sidecar: SidecarProcess, mode: str) -> ChildProcess:
        process = ChildProcess(
            [sys.executable, str(program), str(tmp_path / "journal.txt"), mode],
            env={"MAS_SIDECAR_URL": sidecar.url, "MAS_SIDECAR_TOKEN": sidecar.token},
            log_path=tmp_path / f"agent-{len(processes)}.log",
        )
        process.start()
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()


async def test_an_agent_killed_mid_handler_has_its_message_redelivered_after_the_lease(
    sidecars: Sidecars, tmp_path: Path, agent_process: Any
) -> None:
    alice = sidecars.start("default/alice")
    bob = sidecars.start("default/bob", MAS_LEASE_MS="1000")
    doomed = agent_process(bob, "hang")
    async with alice.client() as client:
        message_id = await client.send("bob", "think")
    await eventually(lambda: f"started {message_id} 1" in journal(tmp_path / "journal.txt"))

    doomed.kill()  # SIGKILL
    agent_process(bob, "answer")

    await eventually(lambda: f"started {message_id} 2" in journal(tmp_path / "journal.txt"))
    assert journal(tmp_path / "journal.txt") == [
        f"started {message_id} 1",
        f"started {message_id} 2",
    ]


async def test_an_idempotent_handler_is_not_run_again_after_a_crash_before_its_ack(
    sidecars: Sidecars, http: aiohttp.ClientSession, tmp_path: Path, agent_process: Any
) -> None:
    alice = sidecars.start("default/alice")
    bob = sidecars.start("default/bob", MAS_LEASE_MS="1000")
    agent_process(bob, "crash-before-ack")
    async with alice.client() as client:
        message_id = await client.send("bob", "effect")
    path = tmp_path / "journal.txt"
    await eventually(lambda: f"crashed {message_id}" in journal(path), "the crash before the ack")

    agent_process(bob, "answer")

    await eventually(lambda: acks_of(Api(http, bob), 1), "the redelivery acked")
    assert value_of(await metrics_of(Api(http, bob)), "mas_redeliveries_total") == 1
    assert journal(path) == [f"effect {message_id} 1", f"crashed {message_id}"]
