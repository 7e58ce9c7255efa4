"""The gateway policy this sidecar enforces: loaded, validated, hot-reloaded, reported.

The compiled policy comes from Redis (``mas:{policy}:document``, published by the operator or
``mas up`` with its revision in ``mas:{policy}:revision``) or from a file (``MAS_POLICY_FILE``).
The store polls for a new revision every quarter second, validates it completely (schema, rule
patterns, DLP detectors) and only then swaps it in; an invalid document is logged, counted and
shown in ``/v1/self`` while the last good policy stays in force. The revision in force is
reported to ``mas:{policy}:enforcers`` so the operator can tell which agents apply it.

Until a first policy loads, every send is refused (default deny), and no metadata is published.
Used by the gateway checks on the send and receive paths, and by the registry.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import redis.asyncio as aioredis
from pydantic import ValidationError

from mas_core.error_codes import ErrorCode
from mas_core.keys import POLICY_DOCUMENT, POLICY_ENFORCERS, POLICY_REVISION
from mas_core.policy.document import CompiledPolicy, EffectivePolicy, effective_policy
from mas_sidecar.aio import wait_event
from mas_sidecar.checks.dlp import DlpScanner
from mas_sidecar.errors import Refusal
from mas_sidecar.metrics import Metrics
from mas_sidecar.streams.errors import REDIS_ERRORS

log = logging.getLogger(__name__)
POLL_SECONDS = 0.25


class PolicyStore:
    """The compiled policy in force, and what it means for this agent and for senders."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        agent_id: str,
        replica: str,
        policy_file: Path | None,
        metrics: Metrics,
    ) -> None:
        self._redis = client
        self._agent_id = agent_id
        self._replica = replica
        self._file = policy_file
        self._metrics = metrics
        self._seen: bytes | float | None = None
        self.document: CompiledPolicy | None = None
        self.own: EffectivePolicy | None = None
        self.scanner: DlpScanner | None = None
        self.error: str | None = None
        self._senders: dict[str, EffectivePolicy] = {}

    @property
    def revision(self) -> str | None:
        return self.document.revision if self.document else None

    def enforced(self) -> EffectivePolicy:
        """What applies to this agent's sends; ``policy_unavailable`` before a policy loads."""
        if self.own is None:
            raise Refusal(
                ErrorCode.POLICY_UNAVAILABLE,
                "no gateway policy is loaded yet, so nothing may be sent (default deny)",
                1,
            )
        return self.own

    def for_sender(self, agent_id: str) -> EffectivePolicy | None:
        """What applies to messages from ``agent_id`` (receive-side checks)."""
        if self.document is None:
            return None
        policy = self._senders.get(agent_id)
        if policy is None:
            policy = self._senders[agent_id] = effective_policy(self.document, agent_id)
        return policy

    async def watch_until(self, stop: asyncio.Event) -> None:
        while True:
            try:
                await self.refresh()
            except REDIS_ERRORS as exc:
                self._metrics.redis_errors.labels("policy").inc()
                log.warning("cannot read the gateway policy: %s", exc)
            if await wait_event(stop, POLL_SECONDS):
                return

    async def restore(self) -> None:
        """Load the published policy again, even of the same revision, and report it: a new
        server may hold no report (or no policy yet: the one in force stays)."""
        self._seen = None
        await self.refresh()

    async def refresh(self) -> None:
        """Load the published policy if its revision changed."""
        if self._file is not None:
            mtime = self._file.stat().st_mtime if self._file.exists() else None
            if mtime is None or mtime == self._seen:
                return
            self._seen = mtime
            self._install(self._file.read_bytes())
            return
        revision = await self._redis.get(POLICY_REVISION)
        if revision is None or revision == self._seen:
            return
        self._seen = revision
        document = await self._redis.get(POLICY_DOCUMENT)
        if document is None:
            return
        if self._install(document):
            await self._redis.hset(
                POLICY_ENFORCERS, f"{self._agent_id}/{self._replica}", self.revision or ""
            )

    def _install(self, raw: bytes) -> bool:
        try:
            document = CompiledPolicy.model_validate_json(raw)
            own = effective_policy(document, self._agent_id)
            scanner = DlpScanner(own.dlp) if own.dlp.enabled else None
        except (ValidationError, ValueError) as exc:
            self.error = f"policy rejected, keeping revision {self.revision}: {exc}"
            self._metrics.policy_errors.inc()
            log.error("%s", self.error)
            return False
        self.document, self.own, self.scanner, self.error = document, own, scanner, None
        self._senders = {}
        self._metrics.policy_reloads.inc()
        log.info("enforcing gateway policy revision %s", document.revision)
        return True
