"""The sending half of the Streams bridge: address envelopes and hand them to the gateway.

A message is accepted (202) only once it passed the gateway checks and Redis appended it to this
agent's own stream into the target (``mas:{target}:in:<this agent>``). A reply goes to this
agent's reply stream to the replica that waits for it
(``mas:{requester}:replies:<replica>:<this agent>``) when the request was synchronous, else to
the requester like any message. A progress report on a synchronous request being handled
(:data:`~mas_core.envelope.PROGRESS_TYPE`) takes the way its reply will take, through the same
checks, and answers nothing. Used by the message and delivery routes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from mas_core.envelope import PROGRESS_TYPE, Envelope
from mas_core.error_codes import ErrorCode
from mas_core.ids import new_id
from mas_core.names import InvalidAgentIdError, qualify
from mas_sidecar.checks.gateway import Destination, Gateway
from mas_sidecar.errors import Refusal
from mas_sidecar.metrics import Metrics
from mas_sidecar.streams.registry import Registry


def _count_if_written(future: asyncio.Future[Any], count: Callable[[], None]) -> None:
    if not future.cancelled() and future.exception() is None:
        count()


def build_envelope(
    *,
    sender: str,
    target: str,
    type: str,
    payload: Any,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    is_reply: bool = False,
    ttl_ms: int | None = None,
    trace: Mapping[str, str] | None = None,
    now_ms: int | None = None,
    principal: str | None = None,
) -> Envelope:
    """A new envelope with a fresh id (pure apart from the clock and the random id);
    ``principal``: the external client it is sent for (inbound A2A)."""
    created = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return Envelope(
        id=new_id(created),
        sender=sender,
        target=target,
        type=type,
        payload=payload,
        correlation_id=correlation_id,
        is_reply=is_reply,
        reply_to=reply_to,
        created_at=created,
        expires_at=created + ttl_ms if ttl_ms else None,
        trace=dict(trace or {}),
        principal=principal,
    )


class Outbox:
    """Addresses this agent's messages and replies."""

    def __init__(
        self, *, agent_id: str, namespace: str, registry: Registry, gateway: Gateway,
        metrics: Metrics, check_writable: Callable[[], None],
    ) -> None:  # fmt: skip
        """``check_writable`` raises while the sidecar is not set up on the server
        (:meth:`~mas_sidecar.recovery.Recovery.check_writable`)."""
        self.agent_id = agent_id
        self._check_writable = check_writable
        self._namespace = namespace
        self._registry = registry
        self._gateway = gateway
        self._metrics = metrics

    async def resolve(self, to: str) -> str:
        """The full id of a registered target; Refusal for a malformed or unknown one, and
        ``redis_unavailable`` while the sidecar is not set up on the server (a half-provisioned
        server could lose what it accepts, or not know the target yet)."""
        self._check_writable()
        try:
            target = qualify(to, self._namespace)
        except InvalidAgentIdError as exc:
            raise Refusal(ErrorCode.INVALID_AGENT_ID, str(exc)) from None
        if not await self._registry.is_registered(target):
            raise Refusal(ErrorCode.UNKNOWN_AGENT, f"no agent {target!r} is registered")
        return target

    async def send(self, envelope: Envelope, kind: str = "message") -> Envelope:
        """Check ``envelope`` and append it to this agent's stream into its target; the envelope
        as written."""
        written, done = await self.admit(envelope, kind)
        await done
        return written

    async def admit(
        self, envelope: Envelope, kind: str = "message"
    ) -> tuple[Envelope, asyncio.Future[list[Any]]]:
        """Check ``envelope`` and queue its append to this agent's stream into the target (see
        :meth:`Gateway.admit`): the envelope as it will be written, and the write's future."""
        written, done = await self._gateway.admit(
            envelope, Destination.inbox_of(envelope.target, self.agent_id)
        )
        counter = self._metrics.messages_sent.labels(kind)
        done.add_done_callback(lambda future: _count_if_written(future, counter.inc))
        return written, done

    async def reply(
        self,
        original: Envelope,
        type: str,
        payload: Any,
        trace: Mapping[str, str] | None = None,
    ) -> Envelope:
        """Answer ``original`` to its sender: to the waiting replica when it is a synchronous
        request (the one reply it takes needs no allow rule, a deny rule still refuses it),
        else to the sender like any message, which the rules must allow. The reply carries
        ``trace`` (the reply's span), or else the trace context of ``original``."""
        self._check_writable()
        envelope = self._answer(original, type, payload, trace, is_reply=True)
        if original.reply_to is None:
            return await self.send(envelope, "reply")
        return await self._to_waiting_replica(original, envelope, "reply")

    async def progress(
        self,
        original: Envelope,
        text: str,
        data: Any = None,
        trace: Mapping[str, str] | None = None,
    ) -> Envelope:
        """Report progress on the synchronous request ``original`` to the replica waiting for
        its reply: every send check (a deny rule refuses it, no allow rule is needed, as for
        the reply; DLP scans ``text`` and ``data``), signed and audited like the reply."""
        self._check_writable()
        payload: dict[str, Any] = {"text": text}
        if data is not None:
            payload["data"] = data
        envelope = self._answer(original, PROGRESS_TYPE, payload, trace, is_reply=False)
        return await self._to_waiting_replica(original, envelope, "progress")

    def _answer(
        self,
        original: Envelope,
        type: str,
        payload: Any,
        trace: Mapping[str, str] | None,
        *,
        is_reply: bool,
    ) -> Envelope:
        """An envelope about ``original`` to its sender: its reply, or a progress report."""
        return build_envelope(
            sender=self.agent_id,
            target=original.sender,
            type=type,
            payload=payload,
            correlation_id=original.id,
            is_reply=is_reply,
            trace=original.trace if trace is None else trace,
        )

    async def _to_waiting_replica(
        self, original: Envelope, envelope: Envelope, kind: str
    ) -> Envelope:
        """Check ``envelope`` (about the synchronous request ``original``: no allow rule
        needed) and write it to the reply stream of the replica waiting for the reply."""
        assert original.reply_to is not None
        destination = Destination.replica_of(original.sender, original.reply_to, self.agent_id)
        written = await self._gateway.send(envelope, destination, answers_request=True)
        self._metrics.messages_sent.labels(kind).inc()
        return written
