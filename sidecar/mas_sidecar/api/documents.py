"""Pure builders of the JSON documents the API answers with, from envelopes and dead letters.

Used by the delivery stream, the request route and the dead-letter routes, so a message looks
the same wherever an agent sees it; their types are in :mod:`mas_sidecar.api.responses`.
"""

from __future__ import annotations

from mas_core.dead_letters import DeadLetter
from mas_core.envelope import Envelope
from mas_sidecar.api import responses


def message_document(envelope: Envelope) -> responses.Message:
    """A message as agents see it (delivery events, dead letters)."""
    return {
        "id": envelope.id,
        "from": envelope.principal or envelope.sender,  # an A2A call: its external client
        "type": envelope.type,
        "payload": envelope.payload,
        "attempt": envelope.attempt,
        "correlation_id": envelope.correlation_id,
        "created_at": envelope.created_at,
        "trace": envelope.trace,
    }


def delivery_document(envelope: Envelope, lease_ms: int) -> responses.Delivery:
    """The data of a delivery event: the message and this sidecar's lease."""
    return {**message_document(envelope), "lease_ms": lease_ms}


def reply_document(envelope: Envelope) -> responses.ReplyMessage:
    """The reply to a request, as ``POST /v1/requests`` answers with it: no ``attempt``."""
    return {
        "id": envelope.id,
        "from": envelope.sender,
        "type": envelope.type,
        "payload": envelope.payload,
        "correlation_id": envelope.correlation_id,
        "created_at": envelope.created_at,
        "trace": envelope.trace,
    }


def dead_letter_document(dead_letter: DeadLetter) -> responses.DeadLetter:
    """A dead letter as ``GET /v1/dead-letters`` lists it."""
    envelope = dead_letter.envelope
    return {
        "id": dead_letter.id,
        "message": None if envelope is None else message_document(envelope),
        "sender": dead_letter.sender,
        "reason": dead_letter.reason,
        "attempts": dead_letter.attempts,
        "failed_at": dead_letter.failed_at,
    }


def sse_event(envelope: Envelope, data: bytes) -> bytes:
    """One server-sent event carrying a delivery (``data`` is its JSON document)."""
    return b"event: message\nid: " + envelope.id.encode() + b"\ndata: " + data + b"\n\n"
