"""The format of a dead letter: the original stream entry's fields, kept whole, plus ``dl:*``.

The sidecar's inbox writes them (:mod:`mas_sidecar.streams.inbox`) when a message ran out of
attempts; :func:`parse_dead_letter` reads one back for the sidecar's dead-letter routes
(:mod:`mas_sidecar.streams.dead_letters`) and the dashboard (:mod:`mas_dashboard.reading`), and
:func:`original_fields` gives the entry a replay appends again.

Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mas_core.envelope import Envelope, EnvelopeError

# Fields a dead letter carries beside the original entry's own (kept whole, whatever it was).
DL_REASON, DL_ATTEMPTS, DL_FAILED_AT = b"dl:reason", b"dl:attempts", b"dl:failed_at"
DL_SENDER = b"dl:sender"  # the agent whose stream the entry came from


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter stream: its message (None when the entry holds no valid
    one), the sender whose stream it came from (None when the entry does not say), why it
    failed, after how many attempts, and when (ms)."""

    id: str
    envelope: Envelope | None
    sender: str | None
    reason: str
    attempts: int
    failed_at: int


def original_fields(fields: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """The fields of the original entry, without the ``dl:*`` ones the inbox added."""
    return {k: v for k, v in fields.items() if not k.startswith(b"dl:")}


def parse_dead_letter(entry_id: bytes, fields: Mapping[bytes, bytes]) -> DeadLetter:
    """The dead letter stored as ``fields`` under ``entry_id``."""
    try:
        envelope: Envelope | None = Envelope.from_entry(original_fields(fields))
    except EnvelopeError:
        envelope = None
    return DeadLetter(
        id=entry_id.decode(),
        envelope=envelope,
        sender=fields.get(DL_SENDER, b"").decode(errors="replace") or None,
        reason=fields.get(DL_REASON, b"").decode(errors="replace"),
        attempts=int(fields.get(DL_ATTEMPTS, b"0")),
        failed_at=int(fields.get(DL_FAILED_AT, b"0")),
    )
