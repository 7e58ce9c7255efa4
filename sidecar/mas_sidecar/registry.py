"""Discovery: this agent's registry entry and liveness lease, and lookups of other agents.

An agent is *registered* while its entry is in ``mas:{registry}:agents`` (messages to it are
accepted, even while it is down: they wait in its inbox) and *live* while its lease in
``mas:{registry}:leases`` lies in the future. Every replica renews the lease every third of its
TTL, so an agent whose replicas all died leaves discovery by itself.

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

from mas.keys import REGISTRY_AGENTS, REGISTRY_LEASES
from mas.registry import entry_document
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
        self._entries: dict[str, tuple[float, dict[str, Any]]] = {}

    def entry(self) -> dict[str, Any]:
        return {"id": self.agent_id, "capabilities": self.capabilities, "metadata": self.metadata}

    async def register(self) -> None:
        """Write this agent's entry and take the liveness lease."""
        document = entry_document(self.capabilities, self.roles, self.metadata)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(REGISTRY_AGENTS, self.agent_id, document)
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

    async def lookup(self, agent_id: str) -> dict[str, Any] | None:
        """The registry entry of ``agent_id`` (cached for a few seconds), None if unregistered."""
        now = time.monotonic()
        cached = self._entries.get(agent_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        raw = await self._redis.hget(REGISTRY_AGENTS, agent_id)
        if raw is None:
            return None
        entry: dict[str, Any] = orjson.loads(raw)
        self._entries[agent_id] = (now + ENTRY_CACHE_SECONDS, entry)
        return entry

    async def is_registered(self, agent_id: str) -> bool:
        return await self.lookup(agent_id) is not None

    async def capabilities_of(self, agent_id: str) -> frozenset[str]:
        entry = await self.lookup(agent_id)
        return frozenset(entry.get("capabilities", ())) if entry else frozenset()

    async def roles_of(self, agent_id: str) -> frozenset[str]:
        entry = await self.lookup(agent_id)
        return frozenset(entry.get("roles", ())) if entry else frozenset()

    async def is_live(self, agent_id: str) -> bool:
        deadline = await self._redis.zscore(REGISTRY_LEASES, agent_id)
        return deadline is not None and deadline > _now_ms()

    async def live_agents(self, capabilities: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Entries of live agents that have every capability in ``capabilities``."""
        ids = await self._redis.zrangebyscore(REGISTRY_LEASES, _now_ms(), "+inf")
        if not ids:
            return []
        documents = await self._redis.hmget(REGISTRY_AGENTS, ids)
        wanted = set(capabilities)
        agents = []
        for raw_id, raw in zip(ids, documents, strict=True):
            if raw is None:
                continue
            entry = orjson.loads(raw)
            if wanted <= set(entry.get("capabilities", [])):
                agents.append(
                    {
                        "id": raw_id.decode(),
                        "capabilities": entry.get("capabilities", []),
                        "metadata": entry.get("metadata", {}),
                    }
                )
        return sorted(agents, key=lambda agent: str(agent["id"]))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
