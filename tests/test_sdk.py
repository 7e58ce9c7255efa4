"""The Python agent SDK (Agent, AgentMessage, SidecarClient) against real sidecars and Redis.

Each test starts the sidecars it needs on loopback and runs SDK agents inside its own event
loop, so what is checked here is the behaviour agent programs get from ``Agent.run``.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, ValidationError
from waiting import GUARD_SECONDS, eventually

from mas import (
    Agent,
    AgentMessage,
    MasError,
    RequestTimeoutError,
    RevisionConflictError,
    SidecarClient,
    UnknownAgentError,
)
from mas_cli.local.processes import ChildProcess, SidecarProcess
from mas_cli.local.redis_server import free_port
from mas_core.sidecar_token import new_token

if TYPE_CHECKING:
    from conftest import Sidecars


class Counter(BaseModel):
    count: int = 0
    seen: list[str] = []
    by_sender: dict[str, int] = {}


class Question(BaseModel):
    text: str


class Ponger(Agent[Counter]):
    """Counts pings per sender, answers each with a pong, records notes and its lifecycle."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        super().__init__(state_model=Counter, sidecar_url=sidecar.url, sidecar_token=sidecar.token)
        self.notes: list[AgentMessage] = []
        self.events: list[str] = []

    async def on_start(self) -> None:
        self.events.append(f"start count={self.state.count}")

    async def on_stop(self) -> None:
        self.events.append("stop")

    def get_metadata(self) -> dict[str, Any]:
        return {"version": "1"}

    @Agent.on("ping", model=Question)
    async def handle_ping(self, message: AgentMessage, payload: Question) -> None:
        self.events.append(f"ping {payload.text}")
        by_sender = {**self.state.by_sender}
        by_sender[message.sender] = by_sender.get(message.sender, 0) + 1
        await self.update_state(
            {
                "count": self.state.count + 1,
                "seen": [*self.state.seen, payload.text],
                "by_sender": by_sender,
            }
        )
        await message.reply("pong", {"n": self.state.count})

    @Agent.on("note")
    async def handle_note(self, message: AgentMessage) -> None:
        self.notes.append(message)


class Flaky(Agent):
    """Fails every message on its first attempt."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        super().__init__(sidecar_url=sidecar.url, sidecar_token=sidecar.token)
        self.attempts: list[int] = []

    @Agent.on("job")
    async def handle_job(self, message: AgentMessage) -> None:
        self.attempts.append(message.attempt)
        if message.attempt == 1:
            raise RuntimeError("first attempt fails")


class LoudPonger(Ponger):
    """Inherits Ponger's handlers and adds one of its own."""

    @Agent.on("shout")
    async def handle_shout(self, message: AgentMessage) -> None:
        await message.reply("SHOUTED", message.payload)


def agent_of(sidecar: SidecarProcess) -> Agent:
    """A bare agent served by ``sidecar``."""
    return Agent(sidecar_url=sidecar.url, sidecar_token=sidecar.token)


async def dead_letters_of(sidecar: SidecarProcess, count: int) -> list[dict[str, Any]]:
    """The dead letters of ``sidecar``'s agent once there are at least ``count`` of them."""

    async def enough() -> list[dict[str, Any]] | None:
        letters = await client.dead_letters()
        return letters if len(letters) >= count else None

    async with sidecar.client() as client:
        letters: list[dict[str, Any]] = await eventually(enough, f"{count} dead letters")
        return letters


async def test_handler_receives_message_sent_by_another_agent(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))
    bob = await started(Ponger(sidecars.start("default/bob")))

    message_id = await alice.send("bob", "note", {"text": "hello"}, correlation_id="c-1")

    await eventually(lambda: len(bob.notes) == 1)
    note = bob.notes[0]
    assert (note.id, note.sender, note.type) == (message_id, "default/alice", "note")
    assert note.payload == {"text": "hello"}
    assert (note.attempt, note.correlation_id) == (1, "c-1")
    assert isinstance(note.created_at, int)


async def test_request_returns_the_reply_of_the_handler(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))
    await started(Ponger(sidecars.start("default/bob")))

    reply = await alice.request("bob", "ping", {"text": "hi"}, timeout=10)

    assert (reply.sender, reply.type, reply.payload) == ("default/bob", "pong", {"n": 1})
    assert reply.correlation_id is not None


async def test_a_reply_cannot_be_replied_to(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))
    await started(Ponger(sidecars.start("default/bob")))
    reply = await alice.request("bob", "ping", {"text": "hi"}, timeout=10)

    with pytest.raises(MasError, match="not a delivery"):
        await reply.reply("thanks")


async def test_request_without_a_reply_raises_request_timeout(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))
    sidecars.start("default/bob")  # registered, but no agent takes its deliveries

    with pytest.raises(RequestTimeoutError):
        await alice.request("bob", "ping", {"text": "anyone?"}, timeout=0.3)


async def test_sending_to_an_unregistered_agent_raises_unknown_agent(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))

    with pytest.raises(UnknownAgentError) as caught:
        await alice.send("nobody", "note")
    assert (caught.value.status, caught.value.code) == (404, "unknown_agent")


async def test_discovery_filters_by_capability_and_shows_published_metadata(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))
    await started(Ponger(sidecars.start("default/bob", capabilities=["pong", "math"])))
    await started(Ponger(sidecars.start("default/carol", capabilities=["pong"])))

    math = await alice.discover(["math"])
    pong = await alice.discover(["pong"])

    assert [agent.id for agent in math] == ["default/bob"]
    assert set(math[0].capabilities) == {"pong", "math"}
    assert math[0].metadata == {"version": "1"}
    assert sorted(agent.id for agent in pong) == ["default/bob", "default/carol"]
    assert await alice.discover(["pong", "math", "chess"]) == []


async def test_agent_id_comes_from_its_sidecar(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    bob = await started(Ponger(sidecars.start("default/bob")))

    assert bob.id == "default/bob"


async def test_an_agent_started_before_its_sidecar_waits_for_it(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    port, token = free_port(), new_token()
    bob = Agent(sidecar_url=f"http://127.0.0.1:{port}", sidecar_token=token)
    starting = asyncio.create_task(started(bob))
    await asyncio.sleep(1.0)
    assert not starting.done(), "the agent waits instead of failing"
    await asyncio.to_thread(sidecars.start, "default/bob", port=port, token=token)
    bob = await asyncio.wait_for(starting, GUARD_SECONDS)
    assert bob.id == "default/bob"


async def test_an_agent_without_a_sidecar_gives_up_after_its_startup_timeout() -> None:
    lonely = Agent(sidecar_url=f"http://127.0.0.1:{free_port()}", startup_timeout=0.5)
    with pytest.raises(MasError, match=r"no sidecar at http://127\.0\.0\.1:\d+ within 0\.5 s"):
        await lonely.start()


async def test_typed_state_with_dict_and_list_fields_survives_an_agent_restart(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))
    bob_sidecar = sidecars.start("default/bob")
    first = await started(Ponger(bob_sidecar))
    await alice.request("bob", "ping", {"text": "one"}, timeout=10)
    await alice.request("bob", "ping", {"text": "two"}, timeout=10)
    await first.stop()

    second = await started(Ponger(bob_sidecar))

    assert second.state == Counter(count=2, seen=["one", "two"], by_sender={"default/alice": 2})
    assert second.events == ["start count=2"]
    reply = await alice.request("bob", "ping", {"text": "three"}, timeout=10)
    assert reply.payload == {"n": 3}


async def test_update_state_reapplies_changes_after_a_revision_conflict(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    sidecar = sidecars.start("default/bob")
    replica_a = await started(Ponger(sidecar))
    replica_b = await started(Ponger(sidecar))  # both loaded revision 0

    await replica_a.update_state({"count": 5})
    await replica_b.update_state({"seen": ["from b"]})

    expected = Counter(count=5, seen=["from b"])
    assert replica_b.state == expected
    async with sidecar.client() as client:
        state, revision = await client.get_state()
    assert (Counter.model_validate(state), revision) == (expected, 2)


async def test_update_state_accepts_a_whole_state_model(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    bob = await started(Ponger(sidecars.start("default/bob")))

    await bob.update_state(Counter(count=7, by_sender={"x": 1}))

    assert bob.state == Counter(count=7, by_sender={"x": 1})


@pytest.mark.parametrize(
    "change", [{"count": "many"}, {"seen": "not a list"}, {"by_sender": {"x": "y"}}, {"typo": 1}]
)
async def test_an_invalid_state_change_raises_and_changes_nothing(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any], change: dict[str, Any]
) -> None:
    sidecar = sidecars.start("default/bob")
    bob = await started(Ponger(sidecar))
    await bob.update_state({"count": 1})

    with pytest.raises(ValidationError):
        await bob.update_state(change)

    assert bob.state == Counter(count=1)
    async with sidecar.client() as client:
        assert await client.get_state() == (Counter(count=1).model_dump(), 1)


async def test_a_handler_that_raises_is_retried_not_acked(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))
    flaky_sidecar = sidecars.start("default/flaky")
    flaky = await started(Flaky(flaky_sidecar))

    await alice.send("flaky", "job", {"n": 1})

    await eventually(lambda: flaky.attempts == [1, 2])
    await asyncio.sleep(0.5)  # no third attempt: the second one was acked
    assert flaky.attempts == [1, 2]
    async with flaky_sidecar.client() as client:
        assert await client.dead_letters() == []


async def test_a_payload_failing_its_model_is_dead_lettered_with_the_validation_error(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))
    bob_sidecar = sidecars.start("default/bob")
    bob = await started(Ponger(bob_sidecar))

    message_id = await alice.send("bob", "ping", {"txt": "typo"})

    [letter] = await dead_letters_of(bob_sidecar, 1)
    assert letter["message"]["id"] == message_id
    assert "text: Field required" in letter["reason"]
    assert "ping" not in " ".join(bob.events)
    assert bob.state.count == 0


async def test_a_message_without_a_handler_is_dead_lettered_naming_its_type(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))
    bob_sidecar = sidecars.start("default/bob")
    await started(Ponger(bob_sidecar))

    await alice.send("bob", "dance", {"style": "tango"})

    [letter] = await dead_letters_of(bob_sidecar, 1)
    assert "no handler" in letter["reason"]
    assert "'dance'" in letter["reason"]


async def test_handlers_are_inherited_by_subclasses(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))
    await started(LoudPonger(sidecars.start("default/bob")))

    shouted = await alice.request("bob", "shout", "hey", timeout=10)
    ponged = await alice.request("bob", "ping", {"text": "hi"}, timeout=10)

    assert (shouted.type, shouted.payload) == ("SHOUTED", "hey")
    assert ponged.type == "pong"


async def test_lifecycle_hooks_run_around_message_handling(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))
    bob = Ponger(sidecars.start("default/bob"))
    await bob.start()

    await alice.request("bob", "ping", {"text": "hi"}, timeout=10)
    await bob.stop()

    assert bob.events == ["start count=0", "ping hi", "stop"]


async def test_stop_waits_for_running_handlers_to_finish(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    class Slow(Agent):
        def __init__(self, sidecar: SidecarProcess) -> None:
            super().__init__(sidecar_url=sidecar.url, sidecar_token=sidecar.token)
            self.began = asyncio.Event()
            self.finished = False

        @Agent.on("work")
        async def handle_work(self, message: AgentMessage) -> None:
            self.began.set()
            await asyncio.sleep(0.3)
            self.finished = True

    alice = await started(agent_of(sidecars.start("default/alice")))
    slow_sidecar = sidecars.start("default/slow")
    slow = Slow(slow_sidecar)
    await slow.start()
    await alice.send("slow", "work")
    await asyncio.wait_for(slow.began.wait(), GUARD_SECONDS)

    await slow.stop()

    assert slow.finished
    # acked: a new agent on the same sidecar gets nothing
    again = await started(Slow(slow_sidecar))
    await asyncio.sleep(0.5)
    assert not again.began.is_set()


async def test_the_agent_resubscribes_when_its_sidecar_restarts(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))
    bob_sidecar = sidecars.start("default/bob")
    bob = await started(Ponger(bob_sidecar))

    bob_sidecar.kill()
    await asyncio.to_thread(bob_sidecar.start)
    await alice.send("bob", "note", "after restart")

    await eventually(lambda: [note.payload for note in bob.notes] == ["after restart"])


ECHO_PROGRAM = """
from mas import Agent, AgentMessage

class Echo(Agent):
    async def on_stop(self) -> None:
        await self.send("alice", "stopped", {"by": self.id})

    @Agent.on("echo")
    async def handle_echo(self, message: AgentMessage) -> None:
        await message.reply("echoed", message.payload)

Echo().run()
"""


async def test_run_serves_until_sigterm_then_stops_cleanly(
    sidecars: Sidecars, tmp_path: Path
) -> None:
    alice_sidecar = sidecars.start("default/alice")
    echo_sidecar = sidecars.start("default/echo")
    program = tmp_path / "echo.py"
    program.write_text(textwrap.dedent(ECHO_PROGRAM))
    agent = ChildProcess(
        [sys.executable, str(program)],
        env={"MAS_SIDECAR_URL": echo_sidecar.url, "MAS_SIDECAR_TOKEN": echo_sidecar.token},
        log_path=tmp_path / "echo.log",
    )
    agent.start()
    try:
        async with alice_sidecar.client() as alice:
            reply = await alice.request("echo", "echo", {"x": 1}, timeout_ms=15000)
            assert (reply["type"], reply["payload"]) == ("echoed", {"x": 1})

            assert await asyncio.to_thread(agent.stop) == 0

            events = alice.deliveries()
            farewell = await asyncio.wait_for(anext(events), GUARD_SECONDS)
            await alice.ack(farewell["id"])
            await events.aclose()
    finally:
        agent.kill()
    assert (farewell["type"], farewell["payload"]) == ("stopped", {"by": "default/echo"})


async def test_client_raises_revision_conflict_for_a_stale_revision(sidecars: Sidecars) -> None:
    async with sidecars.start("default/bob").client() as client:
        assert await client.put_state({"a": 1}, revision=0) == ({"a": 1}, 1)

        with pytest.raises(RevisionConflictError) as caught:
            await client.put_state({"a": 2}, revision=0)
        assert caught.value.status == 412


async def test_client_patch_state_merges_and_deletes_keys(sidecars: Sidecars) -> None:
    async with sidecars.start("default/bob").client() as client:
        await client.put_state({"a": 1, "nested": {"x": 1, "y": 2}})

        state, revision = await client.patch_state({"a": None, "nested": {"y": 3}}, revision=1)

    assert (state, revision) == ({"nested": {"x": 1, "y": 3}}, 2)


async def test_client_replays_and_deletes_dead_letters(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    alice = await started(agent_of(sidecars.start("default/alice")))
    bob_sidecar = sidecars.start("default/bob")
    bob = await started(Ponger(bob_sidecar))
    await alice.send("bob", "ping", {"wrong": 1})
    await alice.send("bob", "ping", {"wrong": 2})
    # the agent handles deliveries concurrently: the dead letters may come in either order
    first, second = sorted(
        await dead_letters_of(bob_sidecar, 2), key=lambda dead: str(dead["message"]["payload"])
    )
    await bob.stop()

    async with bob_sidecar.client() as client:
        await client.delete_dead_letter(first["id"])
        await client.replay_dead_letter(second["id"])
        assert await client.dead_letters() == []
        events = client.deliveries()
        delivery = await asyncio.wait_for(anext(events), GUARD_SECONDS)
        assert delivery["payload"] == {"wrong": 2}
        assert delivery["attempt"] == 1
        await client.ack(delivery["id"])
        await events.aclose()


async def test_client_requires_a_sidecar_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAS_SIDECAR_URL", raising=False)

    with pytest.raises(MasError, match="MAS_SIDECAR_URL"):
        SidecarClient()


async def test_client_takes_its_url_from_the_environment(
    sidecars: Sidecars, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = sidecars.start("default/bob")
    monkeypatch.setenv("MAS_SIDECAR_URL", bob.url)
    monkeypatch.setenv("MAS_SIDECAR_TOKEN", bob.token)

    async with SidecarClient() as client:
        assert (await client.self_info())["id"] == "default/bob"
