"""Shared fixtures: a real Redis-compatible server and real sidecar processes on loopback.

The server is the embedded Valkey by default; set ``MAS_TEST_REDIS_SERVER`` to another binary
(CI also runs the suite against Debian's ``redis-server``). Each test starts from an empty
database.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from hypothesis import settings

from mas import Agent
from mas_cli.local.processes import SidecarProcess
from mas_cli.local.redis_server import RedisServer
from mas_control.provision import ensure_functions, publish_policy, register_agent
from mas_core.policy.document import GatewayPolicySpec, Signing, compile_policies
from mas_core.policy.rules import Rule

# Fixtures of helper modules, for every test module: the glossary, an A2A agent outside mas.
pytest_plugins = ["a2a_remote"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(os.environ.get("MAS_TEST_REDIS_SERVER")) as server:
        yield server


# No per-example deadline: it is a wall-clock bound that a busy machine breaks (no test asserts
# on time). CI explores the same examples on every run, so a red build always means a change.
settings.register_profile("mas", deadline=None)
settings.register_profile("ci", derandomize=True, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "mas")

ALLOW_ALL = compile_policies(
    [
        (
            "default",
            "allow-all",
            GatewayPolicySpec(
                agents=["*/*"],
                rules=[Rule(name="anything", action="allow")],
                signing=Signing(required=False),
            ),
        )
    ]
)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """An empty database with a policy that allows everything (tests of one check narrow it)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    ensure_functions(client)
    publish_policy(client, ALLOW_ALL)
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


class Sidecars:
    """Starts sidecar processes for a test and stops every one of them afterwards; registers
    each agent first, as the control plane does (``admin``: a client with the rights to). Each
    sidecar requires its own API token (``SidecarProcess.token``) of its callers."""

    def __init__(
        self, redis_url: str, log_dir: Path, admin: redis.Redis | redis.RedisCluster | None = None
    ) -> None:
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.admin = admin or redis.Redis.from_url(redis_url)
        self.started: list[SidecarProcess] = []

    def start(
        self,
        agent_id: str,
        *,
        capabilities: list[str] | None = None,
        replica: str | None = None,
        port: int | None = None,
        redis_url: str | None = None,
        token: str | None = None,
        **env: str,
    ) -> SidecarProcess:
        """A ready sidecar for ``agent_id``; ``env`` adds ``MAS_*`` settings; ``redis_url``
        replaces the shared admin URL (e.g. with the agent's own ACL user); ``token`` is the
        one its agent must present (new unless given)."""
        settings = {"MAS_CAPABILITIES": ",".join(capabilities or []), **env}
        roles = [role for role in settings.get("MAS_ROLES", "").split(",") if role]
        register_agent(self.admin, agent_id, capabilities or [], roles)
        if replica:
            settings["MAS_REPLICA_ID"] = replica
        name = agent_id.replace("/", "_") + (f"-{replica}" if replica else "")
        sidecar = SidecarProcess(
            agent_id,
            redis_url or self.redis_url,
            port=port,
            env=settings,
            log_path=self.log_dir / f"{name}-{len(self.started)}.log",
            token=token,
        )
        self.started.append(sidecar)
        sidecar.start()
        return sidecar

    def stop_all(self) -> None:
        for sidecar in self.started:
            sidecar.stop()
        self.admin.close()


@pytest.fixture
def sidecars(redis_url: str, tmp_path: Path) -> Iterator[Sidecars]:
    factory = Sidecars(redis_url, tmp_path / "logs")
    yield factory
    factory.stop_all()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No keep-alive: tests restart sidecars on the same port, a pooled connection would be dead.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session


@pytest.fixture
async def started() -> AsyncIterator[Callable[[Agent[Any]], Any]]:
    """Starts agents for a test and stops those still running at its end."""
    agents: list[Agent[Any]] = []

    async def start(agent: Agent[Any]) -> Any:
        await agent.start()
        agents.append(agent)
        return agent

    yield start
    for agent in reversed(agents):
        await agent.stop()
