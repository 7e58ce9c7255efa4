"""Discovery: this agent's liveness lease and metadata, and lookups of other agents.

An agent is *registered* while its entry is in ``mas:{registry}:agents`` (messages to it are
accepted, even while it is down: they wait in its inbox) and *live* while its lease in
``mas:{registry}:leases`` lies in the future. The entry — the capabilities and roles that
authorization relies on — is written by the control plane only (:mod:`mas.registry`); a
sidecar cannot write it. Every replica renews the lease every third of its TTL, so an agent
whose replicas all died leaves discovery by itself, and publishes the agent's metadata in the
agent's own key. An entry or metadata that does not parse grants nothing and hides nothing
else: lookups treat it as empty, and discovery lists the other agents.

Used by the outbox (is the target registered?), the discovery and self routes, and the app's
background tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from mas.keys import REGISTRY_AGENTS, REGISTRY_LEASES, AgentKeys
from mas.registry import RegistryEntry, parse_entry
from mas_sidecar.aio import wait_event
from mas_sidecar.metrics import Metrics

log = logging.getLogger(__name__)
ENTRY_CACHE_SECONDS = 5.0  # how long a capability or role change takes to reach other senders


class Registry:
    """Registry entry and liveness lease of one agent; lookups of all agents."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        agent_id: str,
        capabilities: Sequence[str],
        roles: Sequence[str],
        metadata: dict[str, Any],
        ttl_ms: int,
        metrics: Metrics,
    ) -> None:
        self._redis = client
        self.agent_id = agent_id
        self.capabilities = list(capabilities)
        self.roles = list(roles)
        self.metadata = metadata
        self._ttl_ms = ttl_ms
        self._metrics = metrics
        self._entries: dict[str, tuple[float, RegistryEntry | None]] = {}

    def entry(self) -> dict[str, Any]:
        return {"id": self.agent_id, "capabilities": self.capabilities, "metadata": self.metadata}

    async def register(self) -> None:
        """Publish this agent's metadata and take the liveness lease."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(AgentKeys(self.agent_id).metadata, orjson.dumps(self.metadata))
            pipe.zadd(REGISTRY_LEASES, {self.agent_id: _now_ms() + self._ttl_ms}, gt=True)
            await pipe.execute()

    async def set_metadata(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata
        await self.register()

    async def renew_until(self, stop: asyncio.Event) -> None:
        """Renew the lease every third of its TTL until ``stop``; survive Redis outages."""
        while not await wait_event(stop, self._ttl_ms / 3000):
            try:
                await self.register()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                self._metrics.redis_errors.labels("registry").inc()
                log.warning("could not renew the discovery lease: %s", exc)

    async def lookup(self, agent_id: str) -> RegistryEntry | None:
        """The registry entry of ``agent_id`` (cached for a few seconds), None if unregistered;
        an entry that does not parse counts as registered with nothing vouched for."""
        now = time.monotonic()
        cached = self._entries.get(agent_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        raw = await self._redis.hget(REGISTRY_AGENTS, agent_id)
        entry = None if raw is None else _parsed(agent_id, raw)
        self._entries[agent_id] = (now + ENTRY_CACHE_SECONDS, entry)
        return entry

    async def is_registered(self, agent_id: str) -> bool:
        return await self.lookup(agent_id) is not None

    async def capabilities_of(self, agent_id: str) -> frozenset[str]:
        entry = await self.lookup(agent_id)
        return frozenset(entry.capabilities) if entry else frozenset()

    async def roles_of(self, agent_id: str) -> frozenset[str]:
        entry = await self.lookup(agent_id)
        return frozenset(entry.roles) if entry else frozenset()

    async def is_live(self, agent_id: str) -> bool:
        deadline = await self._redis.zscore(REGISTRY_LEASES, agent_id)
        return deadline is not None and deadline > _now_ms()

    async def live_agents(self, capabilities: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Entries of live agents that have every capability in ``capabilities``."""
        ids = [raw.decode() for raw in await self._redis.zrangebyscore(
            REGISTRY_LEASES, _now_ms(), "+inf"
        )]  # fmt: skip
        if not ids:
            return []
        documents = await self._redis.hmget(REGISTRY_AGENTS, ids)
        wanted = set(capabilities)
        found = [
            (agent_id, entry)
            for agent_id, raw in zip(ids, documents, strict=True)
            if raw is not None and wanted <= set((entry := _parsed(agent_id, raw)).capabilities)
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            for agent_id, _ in found:
                pipe.get(AgentKeys(agent_id).metadata)
            metadata = await pipe.execute() if found else []
        agents = [
            {"id": agent_id, "capabilities": list(entry.capabilities), "metadata": _object(raw)}
            for (agent_id, entry), raw in zip(found, metadata, strict=True)
        ]
        return sorted(agents, key=lambda agent: str(agent["id"]))


def _parsed(agent_id: str, raw: bytes) -> RegistryEntry:
    entry = parse_entry(raw)
    if entry is None:
        log.warning("the registry entry of %s is not valid; it grants nothing", agent_id)
        return RegistryEntry()
    return entry


def _object(raw: bytes | None) -> dict[str, Any]:
    """Published metadata: a JSON object, or nothing when it is not one."""
    try:
        value = orjson.loads(raw) if raw is not None else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
