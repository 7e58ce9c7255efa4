"""The gateway policy this sidecar enforces: loaded, validated, hot-reloaded, reported.

The compiled policy comes from Redis (``mas:{policy}:document``, published by the operator or
``mas up`` with its revision in ``mas:{policy}:revision``) or from a file (``MAS_POLICY_FILE``,
looked at every quarter second). The publisher also appends a notice to ``mas:{policy}:changes``
in the same transaction; the store blocks on that stream (one read every ``BLOCK_MS`` while
nothing happens) and reads the revision at once after a notice, and every ``poll_ms``
(``MAS_POLICY_POLL_MS``) otherwise, so a notice that was missed (the stream lost or trimmed, a
publisher that wrote none) is made up for within that time. Reading on from the last notice
seen, none published after a read returned is missed; after a set-up on a restarted server
(:meth:`PolicyStore.restore`) it reads the stream from its start again. A new revision is
validated completely (schema, rule patterns, DLP detectors) and only then swapped in; an invalid
document is logged, counted and shown in ``/v1/self`` while the last good policy stays in force.
The revision in force is reported to ``mas:{policy}:enforcers`` so the operator can tell which
agents apply it.

Until a first policy loads, every send is refused (default deny), and no metadata is published.
Used by the gateway checks on the send and receive paths, and by the registry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from pydantic import ValidationError

from mas_core.error_codes import ErrorCode
from mas_core.keys import (
    POLICY_CHANGES,
    POLICY_CHANGES_KEPT,
    POLICY_DOCUMENT,
    POLICY_ENFORCERS,
    POLICY_REVISION,
)
from mas_core.policy.document import CompiledPolicy, EffectivePolicy, effective_policy
from mas_sidecar.aio import wait_event
from mas_sidecar.errors import Refusal
from mas_sidecar.metrics import Metrics
from mas_sidecar.redis_client import BLOCK_MS
from mas_sidecar.streams.errors import REDIS_ERRORS

if TYPE_CHECKING:
    from mas_sidecar.checks.dlp import DlpScanner

log = logging.getLogger(__name__)
POLL_SECONDS = 0.25  # a policy file's modification time is looked at this often
RETRY_SECONDS = 1.0  # after Redis failed


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
        blocking: aioredis.Redis | None = None,
        trouble: Callable[[], None] = lambda: None,
        poll_ms: int = 10_000,
    ) -> None:
        """``blocking``: the client for the read that waits for a notice (``client`` if None);
        ``trouble``: called when Redis could not be reached; ``poll_ms``: how often the revision
        is read without a notice."""
        self._redis = client
        self._blocking = blocking or client
        self._trouble = trouble
        self._poll_seconds = poll_ms / 1000
        self._poll_at = 0.0  # when the revision is read again without a notice (monotonic)
        self._notice: bytes | str = "0-0"  # the last notice read on the changes stream
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
        """Load each new policy until ``stop``: see the module docstring."""
        while not stop.is_set():
            try:
                if self._file is not None:
                    await self.refresh()
                    await wait_event(stop, POLL_SECONDS)
                    continue
                if time.monotonic() >= self._poll_at:
                    self._poll_at = time.monotonic() + self._poll_seconds
                    await self.refresh()
                if await self._wait_for_notice():
                    self._poll_at = 0.0  # read the revision now
            except REDIS_ERRORS as exc:
                self._metrics.redis_errors.labels("policy").inc()
                log.warning("cannot read the gateway policy: %s", exc)
                self._trouble()
                await wait_event(stop, RETRY_SECONDS)

    async def _wait_for_notice(self) -> bool:
        """Wait for a notice newer than the last one read on the changes stream, until the
        next poll is due (``BLOCK_MS`` at most); whether one came."""
        wait = self._poll_at - time.monotonic()
        answer = await self._blocking.xread(
            {POLICY_CHANGES: self._notice},
            count=POLICY_CHANGES_KEPT,
            block=max(1, min(BLOCK_MS, int(wait * 1000))),
        )
        came = False
        for _stream, entries in answer or ():
            if entries:
                self._notice, came = entries[-1][0], True
        return came

    async def restore(self) -> None:
        """Load the published policy again, even of the same revision, and report it: a new
        server may hold no report (or no policy yet: the one in force stays), and its changes
        stream starts anew."""
        self._seen = None
        self._notice = "0-0"
        self._poll_at = 0.0
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
            scanner = _scanner(own) if own.dlp.enabled else None
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


def _scanner(policy: EffectivePolicy) -> DlpScanner:
    """The DLP scanner of ``policy`` (its module is loaded only when a policy turns DLP on)."""
    from mas_sidecar.checks.dlp.scanner import DlpScanner  # noqa: PLC0415 - lazy, see above

    return DlpScanner(policy.dlp)
