"""Faults of the Redis server: restarts with and without persistence, SIGKILL; agents work again
on their own.

Each test runs its own server (the embedded Valkey, or ``MAS_TEST_REDIS_SERVER``), two sidecars
with least-privilege ACL users, and the control plane's recovery (:mod:`mas.recovery`, as the
operator and ``mas up`` run it) in a thread. It sends messages that get a 202, breaks the
server, sends more once the sidecars are ready again, and receives: every message accepted
after the fault is delivered, and every one accepted before it too where the server persists
them (append-only file). What a test measures — messages lost, seconds until both sidecars are
ready again — is printed (``pytest -s``), never asserted on.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import aiohttp
import pytest
import redis
from api import Api
from conftest import ALLOW_ALL
from waiting import eventually

from mas.acl import agent_redis_url, apply_acl_user, generate_password
from mas.functions import ensure_functions
from mas.local.processes import SidecarProcess
from mas.local.redis_server import RedisServer
from mas.policy.publish import publish_policy
from mas.recovery import PROBE_SECONDS, Provisioned, ServerWatch, apply_repair
from mas.registry import register_agent

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
