"""A message as an agent sees it: a delivery handed to a handler, or the reply to a request.

Built by :class:`mas.Agent` from the sidecar's delivery events and ``/v1/requests`` answers and
passed to user handlers; a delivered message can be answered with :meth:`AgentMessage.reply`
(a request's handler may report progress first, :meth:`AgentMessage.progress`), its lease
renewed with :meth:`AgentMessage.extend`, and its ``lease_lost`` event tells the handler that
another replica may be handling it (:mod:`mas.leases`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from mas.client import SidecarClient
from mas.errors import LeaseLostError, MasError, SidecarError
from mas.leases import DEFAULT_LEASE_MS, DeliveryLease
from mas_core.error_codes import ErrorCode


@dataclass(frozen=True)
class AgentMessage:
    """One received message. ``sender`` is the full id of the agent that sent it."""

    id: str
    sender: str
    type: str
    payload: Any = None
    attempt: int = 1
    correlation_id: str | None = None
    created_at: int | None = None
    trace: dict[str, str] = field(default_factory=dict)  # W3C trace context it continues
    _client: SidecarClient | None = field(default=None, repr=False, compare=False)
    _lease: DeliveryLease = field(
        default_factory=lambda: DeliveryLease(""), repr=False, compare=False
    )

    @classmethod
    def from_delivery(cls, document: dict[str, Any], client: SidecarClient) -> AgentMessage:
        """The message of a delivery event; it can be replied to through ``client``."""
        return cls._from_document(document, client)

    @classmethod
    def from_reply(cls, document: dict[str, Any]) -> AgentMessage:
        """The reply returned by a request; it is not a delivery and cannot be replied to."""
        return cls._from_document(document, None)

    @classmethod
    def _from_document(cls, document: dict[str, Any], client: SidecarClient | None) -> AgentMessage:
        try:
            return cls(
                id=str(document["id"]),
                sender=str(document["from"]),
                type=str(document["type"]),
                payload=document.get("payload"),
                attempt=int(document.get("attempt") or 1),
                correlation_id=document.get("correlation_id"),
                created_at=document.get("created_at"),
                trace=dict(document.get("trace") or {}),
                _client=client,
                _lease=DeliveryLease(
                    str(document["id"]), int(document.get("lease_ms") or DEFAULT_LEASE_MS)
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MasError(f"not a message document: {exc!r}") from exc

    async def reply(self, type: str, payload: Any = None) -> str:
        """Reply to the sender (the waiting requester, if any); the id of the reply message.

        Replying does not complete the delivery: the agent acks it when the handler returns.
        """
        if self._client is None:
            raise MasError(f"message {self.id} is a reply to a request, not a delivery")
        return await self._client.reply(self.id, type, payload)

    async def progress(self, text: str, data: Any = None) -> str:
        """Tell the requester what the handler of this request is doing now, before the reply:
        ``text`` (1 to 4096 characters) says it to a person, ``data`` (any JSON) to a program.
        The id of the progress report.

        A report goes through this agent's sidecar like the reply will (signed, DLP scanned,
        audited; a deny rule refuses it) and never answers the request: only :meth:`reply`
        does. An A2A client sees each report as a ``TaskStatusUpdateEvent`` (state working)
        and in ``GetTask``; a mas requester does not see them (``request`` returns the reply).
        Only a request (``Agent.request``, an A2A call) takes reports, and only until it is
        answered: otherwise :class:`mas.errors.SidecarError` with code ``not_a_request`` or
        ``already_replied``. A report DLP blocks raises :class:`mas.errors.DlpBlockedError`
        and fails nothing else: catch it to carry on. One that arrives after the request
        timed out is dropped by the requester's sidecar.
        """
        if self._client is None:
            raise MasError(f"message {self.id} is a reply to a request, not a delivery")
        return await self._client.progress(self.id, text, data)

    @property
    def lease_lost(self) -> asyncio.Event:
        """Set when the lease of this delivery is lost while its handler runs: the sidecar no
        longer holds it (it ran out or another replica took it over), or could not be reached
        to renew it. The message is, or will be, delivered again, maybe to another replica; the
        agent cancels the handler (``asyncio.CancelledError``) and neither acks nor nacks it.
        A handler that must clean up catches the cancellation, looks at this, and re-raises."""
        return self._lease.lost

    async def extend(self, seconds: float = 0.0) -> None:
        """Renew this delivery's lease now, and let the handler run at least ``seconds`` more
        before its ``timeout`` (``@Agent.on(..., timeout=...)``) cancels it.

        An :class:`mas.Agent` renews the leases of running handlers by itself; this is for
        making sure the lease is still held before a side effect, or for asking for more time
        than the handler's ``timeout``. Raises :class:`mas.errors.LeaseLostError` (and sets
        :attr:`lease_lost`) when the lease is gone. On a message not handled by an ``Agent``
        it renews the lease once (for the sidecar's ``lease_ms``).
        """
        if self._client is None:
            raise MasError(f"message {self.id} is a reply to a request, not a delivery")
        try:
            await self._client.extend(self.id)
        except SidecarError as exc:
            if exc.code != ErrorCode.DELIVERY_NOT_FOUND:
                raise
            self._lease.lost.set()
            raise LeaseLostError(
                f"the lease of delivery {self.id} is gone: it may be handled elsewhere"
            ) from exc
        self._lease.give(seconds)
