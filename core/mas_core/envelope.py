"""The message envelope: what one agent's sidecar writes to another agent's inbox.

An envelope is stored as one stream entry field (:data:`ENTRY_FIELD`) holding its JSON, so the
exact bytes a sender wrote are the bytes a receiver reads (which is what a signature covers).
``attempt`` is not stored: the receiving sidecar sets it from the stream's delivery count.
A progress report (:data:`PROGRESS_TYPE`, :attr:`Envelope.is_progress`) travels like the reply
to the request it reports on, but never answers it.

Used by the sidecar (build, store, deliver) and by tests that inspect Redis directly.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENTRY_FIELD = b"e"
# The type of a progress report on a request being handled: built only by the sending sidecar's
# progress route, with the request's id as its correlation id; its payload is
# ``{"text": str, "data": <any JSON> (optional)}``.
PROGRESS_TYPE = "mas.progress"


class EnvelopeError(ValueError):
    """Bytes read from a stream are not a valid envelope."""


class Envelope(BaseModel):
    """One message, addressed from one agent to another."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=64)
    sender: str = Field(min_length=3, max_length=127)
    target: str = Field(min_length=3, max_length=127)
    type: str = Field(min_length=1, max_length=128)
    payload: Any = None
    correlation_id: str | None = Field(default=None, max_length=128)
    is_reply: bool = Field(default=False, description="built by the sidecar's reply route")
    reply_to: str | None = Field(
        default=None, max_length=128, description="replica that waits synchronously for a reply"
    )
    created_at: int = Field(description="milliseconds since the epoch")
    expires_at: int | None = Field(default=None, description="milliseconds since the epoch")
    attempt: int = Field(default=1, ge=1)
    trace: dict[str, str] = Field(default_factory=dict, description="W3C trace context headers")
    principal: str | None = Field(
        default=None,
        max_length=127,
        pattern=r"^external/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="the external client (external/<name>) the sending sidecar authenticated "
        "and sent this for, to its own agent (inbound A2A); authorization judges it as that "
        "principal",
    )
    signature: str | None = None
    token: str | None = None

    def to_entry(self) -> dict[bytes, bytes]:
        """The stream entry fields that store this envelope."""
        return {ENTRY_FIELD: self.model_dump_json(exclude={"attempt"}).encode()}

    @classmethod
    def from_entry(cls, fields: dict[bytes, bytes], attempt: int = 1) -> Envelope:
        """Decode a stream entry; raise :class:`EnvelopeError` when it is not an envelope."""
        raw = fields.get(ENTRY_FIELD)
        if raw is None:
            raise EnvelopeError("stream entry has no envelope field")
        try:  # orjson: what it reads it writes back alike, which signatures rely on
            envelope = cls.model_validate(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"stream entry is not JSON ({exc.msg})") from exc
        except ValidationError as exc:
            count = exc.error_count()
            raise EnvelopeError(f"stream entry is not a valid envelope ({count} errors)") from exc
        return envelope.model_copy(update={"attempt": attempt})

    @property
    def is_progress(self) -> bool:
        """A progress report on the request named by ``correlation_id``, not its reply."""
        return self.type == PROGRESS_TYPE and not self.is_reply and self.correlation_id is not None

    def is_expired(self, now_ms: int) -> bool:
        """True when the envelope carries an expiry that has passed."""
        return self.expires_at is not None and now_ms >= self.expires_at
