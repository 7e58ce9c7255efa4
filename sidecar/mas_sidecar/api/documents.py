"""Pure builders of the JSON documents the API answers with, from envelopes and dead letters.

Used by the delivery stream, the request route and the dead-letter routes, so a message looks
the same wherever an agent sees it.
"""

from __future__ import annotations

from typing import Any

from mas_core.envelope import Envelope
from mas_sidecar.streams.dead_letters import DeadLetter


def message_document(envelope: Envelope) -> dict[str, Any]:
    """A message as agents see it (delivery events, replies, dead letters)."""
    return {
        "id": envelope.id,
        "from": envelope.sender,
        "type": envelope.type,
        "payload": envelope.payload,
        "attempt": envelope.attempt,
        "correlation_id": envelope.correlation_id,
        "created_at": envelope.created_at,
        "trace": envelope.trace,
    }


def dead_letter_document(dead_letter: DeadLetter) -> dict[str, Any]:
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
