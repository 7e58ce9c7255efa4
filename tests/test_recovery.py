"""Faults of the Redis server: restarts with and without persistence, SIGKILL; agents work again
on their own.

Each test runs its own server (the embedded Valkey, or ``MAS_TEST_REDIS_SERVER``), two sidecars
with least-privilege ACL users, and the control plane's recovery (:mod:`mas_control.recovery`, as
the operator and ``mas up`` run it) in a thread. It sends messages that get a 202, breaks the
server, sends more once the sidecars are ready again, and receives: every message accepted
after the fault is delivered, and every one accepted before it too where the server persists
them (append-only file). What a test measures — messages lost, seconds until both sidecars are
ready again — is printed (``pytest -s``), never asserted on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import pytest
import redis
from api import Api
from conftest import ALLOW_ALL
from waiting import eventually

from mas_cli.local.processes import SidecarProcess
from mas_cli.local.redis_server import RedisServer
from mas_control.provision import apply_acl_user, ensure_functions, publish_policy, register_agent
from mas_control.recovery import (
    PROBE_SECONDS,
    Provisioned,
    ServerFacts,
    ServerWatch,
    apply_repair,
    plan_repair,
)
from mas_core.acl import acl_username, agent_redis_url, generate_password
from mas_core.functions import VERSION

SENDER, RECEIVER = "default/alice", "default/bob"
MESSAGES = 20  # accepted before the fault, and as many after


class ControlPlane:
    """The control plane's recovery loop, in a thread: what the operator and ``mas up`` run."""

    def __init__(self, url: str, agents: dict[str, Provisioned]) -> None:
        self._url = url
        self._agents = agents
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.watch = ServerWatch()

    def _run(self) -> None:
        client = redis.Redis.from_url(self._url, socket_timeout=2, socket_connect_timeout=1)
        try:
            while not self._stop.wait(PROBE_SECONDS):
                try:
                    facts, repair = self.watch.plan(
                        client, self._agents, policy_revision=ALLOW_ALL.revision
                    )
                    apply_repair(client, repair, self._agents, ALLOW_ALL)
                except redis.RedisError:
                    continue
                self.watch.repaired(facts, repair)
        finally:
            client.close()

    def __enter__(self) -> ControlPlane:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(params=[False, True], ids=["no-persistence", "append-only"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    data = tmp_path / "data"
    data.mkdir()
    with RedisServer(
        os.environ.get("MAS_TEST_REDIS_SERVER"), append_only=request.param, data_dir=data
    ) as started:
        yield started


def _provision(server: RedisServer) -> dict[str, Provisioned]:
    agents = {agent: Provisioned(generate_password(), [], []) for agent in (SENDER, RECEIVER)}
    with redis.Redis.from_url(server.url) as admin:
        ensure_functions(admin)
        publish_policy(admin, ALLOW_ALL)
        for agent_id, wanted in agents.items():
            apply_acl_user(admin, agent_id, wanted.password)
            register_agent(admin, agent_id, wanted.capabilities, wanted.roles)
    return agents


async def _ready(api: Api) -> bool:
    try:
        return (await api.call("GET", "/readyz"))[0] == 200
    except aiohttp.ClientError:
        return False


@pytest.mark.parametrize("fault", ["restart", "sigkill"])
async def test_agents_work_again_after_the_server_restarts(
    server: RedisServer, fault: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    agents = _provision(server)
    sidecars = [
        SidecarProcess(
            agent_id,
            agent_redis_url(server.url, agent_id, agents[agent_id].password),
            log_path=tmp_path / f"{agent_id.replace('/', '_')}.log",
        )
        for agent_id in (SENDER, RECEIVER)
    ]
    with ControlPlane(server.url, agents) as control:
        try:
            for sidecar in sidecars:
                sidecar.start()
            alice, bob = (Api(http, sidecar) for sidecar in sidecars)
            before = [await alice.send(RECEIVER, "note", {"n": n}) for n in range(MESSAGES)]

            assert server.process is not None
            if fault == "sigkill":
                server.process.kill()
            else:
                server.process.terminate()
            server.process.wait()
            status, answer = await alice.call("POST", "/v1/messages", {"to": RECEIVER, "type": "x"})
            assert status == 503 and answer["error"]["code"] == "redis_unavailable", answer
            broke = time.monotonic()
            server.restart()

            async def both_ready() -> bool:
                return all([await _ready(alice), await _ready(bob)])

            await eventually(both_ready, "both sidecars ready again")
            recovered = time.monotonic() - broke
            after = [await alice.send(RECEIVER, "note", {"n": n}) for n in range(MESSAGES)]

            wanted = set(after)
            received: set[str] = set()

            async with contextlib.aclosing(bob.deliveries()) as events:
                async for event in events:
                    received.add(event["id"])
                    assert await bob.answer(event["id"], "ack") == 204
                    if wanted <= received:
                        break
        finally:
            for sidecar in sidecars:
                sidecar.stop()
    lost = len(set(before) - received)
    print(
        f"\nRECOVERY fault={fault} append_only={server.append_only} "
        f"lost_before={lost}/{MESSAGES} lost_after=0/{MESSAGES} "
        f"ready_again_s={recovered:.2f} control_plane_repairs={control.watch.repairs}"
    )
    if server.append_only:
        assert lost == 0  # the append-only file keeps every accepted message


async def test_readyz_names_a_loop_that_is_not_running_until_it_runs_again(
    redis_url: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    password = generate_password()
    with redis.Redis.from_url(redis_url) as admin:
        apply_acl_user(admin, SENDER, password)
        register_agent(admin, SENDER, [], [])
        sidecar = SidecarProcess(
            SENDER, agent_redis_url(redis_url, SENDER, password), log_path=tmp_path / "a.log"
        )
        sidecar.start()
        try:
            alice = Api(http, sidecar)
            # The reply loop's XREAD refused: it fails, is restarted, fails again. (The policy
            # loop's blocking read of policy notices is an XREAD too: it fails as well, each of
            # them between its restarts, so which of the two are named at one moment varies.)
            admin.execute_command("ACL", "SETUSER", acl_username(SENDER), "-xread")

            async def loop_stopped() -> bool:
                status, answer = await alice.call("GET", "/readyz")
                error = answer["error"] if status == 503 else {}
                named = error.get("message", "").removeprefix("background loops not running: ")
                return (error.get("code"), error.get("reason")) == (
                    "not_ready",
                    "loop_stopped",
                ) and "replies" in named.split(", ")

            await eventually(loop_stopped, "the reply loop reported as not running")
            apply_acl_user(admin, SENDER, password)
            await eventually(lambda: _ready(alice), "ready again")

            async def set_up_again() -> bool:  # the failed loop made it look at the server
                return await alice.metric("mas_recoveries_total") >= 1

            await eventually(set_up_again, "set up again after the loop failed")
        finally:
            sidecar.stop()


def _facts(**changes: Any) -> ServerFacts:
    healthy = ServerFacts(
        run_id="a", functions_version=VERSION, missing_users=frozenset(),
        policy_revision="r1", missing_entries=frozenset(),
    )  # fmt: skip
    return dataclasses.replace(healthy, **changes)


def test_a_healthy_server_needs_no_repair_and_a_new_run_id_needs_everything() -> None:
    assert not plan_repair(_facts(), _facts(), policy_revision="r1")
    assert not plan_repair(None, _facts(), policy_revision="r1")
    lost = _facts(
        run_id="b", missing_users=frozenset({"ns/a"}), missing_entries=frozenset({"ns/a"})
    )
    repair = plan_repair(_facts(), lost, policy_revision="r1")
    assert (repair.functions, repair.users, repair.policy, repair.entries) == (
        True, frozenset({"ns/a"}), True, frozenset({"ns/a"}),
    )  # fmt: skip
    assert "run_id a -> b" in repair.why


def test_only_what_is_missing_is_repaired() -> None:
    no_library = plan_repair(_facts(), _facts(functions_version=None), policy_revision="r1")
    assert no_library.functions and no_library.policy
    users = plan_repair(_facts(), _facts(missing_users=frozenset({"ns/a"})), policy_revision="r1")
    assert (users.functions, users.users, users.policy) == (False, frozenset({"ns/a"}), False)
    stale = plan_repair(_facts(), _facts(policy_revision="r0"), policy_revision="r1")
    assert (stale.functions, stale.users, stale.policy) == (False, frozenset(), True)
    assert not plan_repair(_facts(), _facts(policy_revision=None), policy_revision=None)
