"""The sending half of the Streams bridge: build envelopes and write them to inboxes.

A message is accepted (202) only once Redis has appended it to the target's inbox. A reply goes
to the replica that waits for it (``mas:{sender}:replies:<replica>``) when the request was
synchronous, else to the sender's inbox like any message. Used by the message and delivery
routes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from mas.envelope import Envelope
from mas.errors import ErrorCode
from mas.ids import new_id
from mas.keys import AgentKeys
from mas.names import InvalidAgentIdError, qualify

from mas_sidecar.errors import ApiError
from mas_sidecar.metrics import Metrics
from mas_sidecar.registry import Registry

# Replies to synchronous requests are read within milliseconds; these bounds only keep a dead
# requester's reply stream from lingering.
REPLY_STREAM_MAXLEN = 10_000
REPLY_STREAM_TTL_MS = 600_000


def build_envelope(
    *,
    sender: str,
    target: str,
    type: str,
    payload: Any,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    ttl_ms: int | None = None,
    trace: Mapping[str, str] | None = None,
    now_ms: int | None = None,
) -> Envelope:
    """A new envelope with a fresh id (pure apart from the clock and the random id)."""
    created = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return Envelope(
        id=new_id(created),
        sender=sender,
        target=target,
        type=type,
        payload=payload,
        correlation_id=correlation_id,
        reply_to=reply_to,
        created_at=created,
        expires_at=created + ttl_ms if ttl_ms else None,
        trace=dict(trace or {}),
    )


class Outbox:
    """Writes this agent's messages and replies."""

    def __init__(
        self, client: aioredis.Redis, *, agent_id: str, namespace: str, registry: Registry,
        metrics: Metrics,
    ) -> None:  # fmt: skip
        self._redis = client
        self.agent_id = agent_id
        self._namespace = namespace
        self._registry = registry
        self._metrics = metrics

    async def resolve(self, to: str) -> str:
        """The full id of a registered target; ApiError for a malformed or unknown one."""
        try:
            target = qualify(to, self._namespace)
        except InvalidAgentIdError as exc:
            raise ApiError(ErrorCode.INVALID_AGENT_ID, str(exc)) from None
        if not await self._registry.is_registered(target):
            raise ApiError(ErrorCode.UNKNOWN_AGENT, f"no agent {target!r} is registered")
        return target

    async def send(self, envelope: Envelope, kind: str = "message") -> None:
        """Append ``envelope`` to its target's inbox."""
        await self._redis.xadd(AgentKeys(envelope.target).inbox, envelope.to_entry())
        self._metrics.messages_sent.labels(kind).inc()

    async def reply(self, original: Envelope, type: str, payload: Any) -> Envelope:
        """Answer ``original`` to its sender, to the waiting replica if there is one."""
        envelope = build_envelope(
            sender=self.agent_id,
            target=original.sender,
            type=type,
            payload=payload,
            correlation_id=original.id,
            trace=original.trace,
        )
        if original.reply_to is None:
            await self.send(envelope, "reply")
            return envelope
        key = AgentKeys(original.sender).replies(original.reply_to)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, envelope.to_entry(), maxlen=REPLY_STREAM_MAXLEN, approximate=True)
            pipe.pexpire(key, REPLY_STREAM_TTL_MS)
            await pipe.execute()
        self._metrics.messages_sent.labels("reply").inc()
        return envelope
