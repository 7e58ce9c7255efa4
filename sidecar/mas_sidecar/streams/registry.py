"""Discovery: this agent's liveness lease and metadata, and lookups of other agents.

An agent is *registered* while its entry is in ``mas:{registry}:agents`` (messages to it are
accepted, even while it is down: they wait in its inbox) and *live* while its lease in
``mas:{registry}:leases`` lies in the future. The entry — the capabilities and roles that
authorization relies on — is written by the control plane only
(:mod:`mas_core.registry_entries`); a sidecar cannot write it. Every replica renews the lease
every third of its TTL, so an agent whose replicas all died leaves discovery by itself (a
renewal is one ``ZADD``), and publishes the agent's metadata in the agent's own key when it
changed, and at every set-up on the server. An entry or metadata that does not parse grants
nothing and hides nothing else: lookups treat it as empty, and discovery lists the other agents.

The entry's metadata is readable by every agent, so it goes through DLP like a message: what
the agent asks to publish (``PUT /v1/self``, or ``MAS_METADATA`` until then) is published as the
DLP policy in force lets it out, redacted where a detector redacts. A request whose metadata a
blocking detector hits is refused (422 ``dlp_blocked``, audited) and what was published stays;
before a policy is in force nothing is published (and a request is refused with 503). When the
policy in force changes, the next renewal scans the metadata again: what a detector now blocks is
withheld (published as ``{}``, logged, counted), what it now redacts is redacted.

Used by the outbox (is the target registered?), the discovery and self routes, and the app's
background tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NotRequired

import orjson
import redis.asyncio as aioredis
from typing_extensions import TypedDict

from mas_core.error_codes import ErrorCode
from mas_core.keys import REGISTRY_AGENTS, REGISTRY_LEASES, AgentKeys
from mas_core.registry_entries import RegistryEntry, parse_entry
from mas_sidecar.aio import wait_event
from mas_sidecar.checks.audit_log import AuditLog, metadata_event
from mas_sidecar.checks.policy_store import PolicyStore
from mas_sidecar.errors import Refusal
from mas_sidecar.metrics import Metrics
from mas_sidecar.streams.errors import REDIS_ERRORS

if TYPE_CHECKING:
    from mas_sidecar.checks.dlp import PartsResult

log = logging.getLogger(__name__)
ENTRY_CACHE_SECONDS = 5.0  # how long a capability or role change takes to reach other senders


class AgentEntry(TypedDict):
    """An agent as discovery shows it (``GET /v1/agents``, and ``GET /v1/self`` extends it)."""

    id: str
    capabilities: list[str]
    metadata: dict[str, Any]
    external: NotRequired[bool]  # an A2A agent outside mas (an ExternalAgent)


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
        policies: PolicyStore,
        audit: AuditLog,
        metrics: Metrics,
    ) -> None:
        self._redis = client
        self.agent_id = agent_id
        self.capabilities = list(capabilities)
        self.roles = list(roles)
        self._wanted = metadata  # what the agent (or its configuration) asks to publish
        self.metadata: dict[str, Any] = {}  # what discovery shows: as the DLP policy lets it out
        self._screened_under: str | None = None  # the policy revision ``metadata`` is as of
        self._ttl_ms = ttl_ms
        self._policies = policies
        self._audit = audit
        self._metrics = metrics
        self._entries: dict[str, tuple[float, RegistryEntry | None]] = {}
        self._published: bytes | None = None  # the metadata document last written

    def entry(self) -> AgentEntry:
        return {"id": self.agent_id, "capabilities": self.capabilities, "metadata": self.metadata}

    async def register(self, *, again: bool = False) -> None:
        """Take the liveness lease, and publish this agent's metadata (scanned again if the
        policy in force changed) unless what it published last is unchanged; ``again``: publish
        it all the same (the server may have lost it)."""
        if self._policies.revision != self._screened_under:
            self._rescreen()
        document = orjson.dumps(self.metadata)
        lease = {self.agent_id: _now_ms() + self._ttl_ms}
        if document == self._published and not again:
            await self._redis.zadd(REGISTRY_LEASES, lease, gt=True)
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(AgentKeys(self.agent_id).metadata, document)
            pipe.zadd(REGISTRY_LEASES, lease, gt=True)
            await pipe.execute()
        self._published = document

    async def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Publish ``metadata`` as the DLP policy in force lets it out; Refusal when the
        policy blocks it (or none is in force yet), and then what was published stays."""
        self._policies.enforced()
        published, result = self._screen(metadata)
        findings = [] if result is None else [finding.record() for finding in result.findings]
        if result is not None and result.refusal is not None:
            event = metadata_event(
                "metadata_blocked", self.agent_id, metadata, reason=result.refusal, dlp=findings
            )
            await self._audit.record(event)
            raise Refusal(ErrorCode.DLP_BLOCKED, result.refusal)
        self._wanted, self.metadata = metadata, published
        self._screened_under = self._policies.revision
        await self.register()
        details = {"dlp": findings} if findings else {}
        await self._audit.record(
            metadata_event("metadata_published", self.agent_id, published, **details)
        )

    def _screen(self, metadata: dict[str, Any]) -> tuple[dict[str, Any], PartsResult | None]:
        """``metadata`` as the DLP policy in force lets it out (``{}`` if it blocks it), and
        the scan (None with DLP off); findings are counted."""
        scanner = self._policies.scanner
        if scanner is None:
            return metadata, None
        result = scanner.scan_parts({"metadata": metadata})
        self._metrics.count_findings(result.findings)
        if result.refusal is not None:
            return {}, result
        return result.redacted.get("metadata", metadata), result

    def _rescreen(self) -> None:
        """Scan what the agent asks to publish under the policy now in force (nothing is
        published before one is)."""
        self._screened_under = self._policies.revision
        if self._policies.own is None:
            self.metadata = {}
            return
        self.metadata, result = self._screen(self._wanted)
        if result is not None and result.findings:
            log.warning(
                "discovery metadata %s under policy revision %s: %s",
                "withheld" if result.refusal is not None else "published with findings",
                self._screened_under,
                [finding.record() for finding in result.findings],
            )

    async def renew_until(self, stop: asyncio.Event) -> None:
        """Renew the lease every third of its TTL until ``stop``; survive Redis outages."""
        while not await wait_event(stop, self._ttl_ms / 3000):
            try:
                await self.register()
            except REDIS_ERRORS as exc:
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

    async def live_agents(self, capabilities: Sequence[str] = ()) -> list[AgentEntry]:
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
        agents: list[AgentEntry] = []
        for (agent_id, entry), raw in zip(found, metadata, strict=True):
            agent: AgentEntry = {
                "id": agent_id, "capabilities": list(entry.capabilities), "metadata": _object(raw)
            }  # fmt: skip
            if entry.external is not None:
                agent["external"] = True
            agents.append(agent)
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
