"""A message as an agent sees it: a delivery handed to a handler, or the reply to a request.

Built by :class:`mas.Agent` from the sidecar's delivery events and ``/v1/requests`` answers and
passed to user handlers; a delivered message can be answered with :meth:`AgentMessage.reply`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mas.client import SidecarClient
from mas.errors import MasError


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
    _client: SidecarClient | None = field(default=None, repr=False, compare=False)

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
                _client=client,
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
