"""Request bodies of the HTTP API, as strict pydantic models (no type coercion, no extra keys).

Their JSON schemas also feed :mod:`mas_sidecar.api.openapi` (the answers' types are in
:mod:`mas_sidecar.api.responses`). Used by the routes.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mas_sidecar.streams.replies import MAX_TIMEOUT_MS

MessageType = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/-]{1,128}$")]
AgentRef = Annotated[str, Field(min_length=1, max_length=127)]
MAX_TTL_MS = 7 * 24 * 3600 * 1000
MAX_BATCH_MESSAGES = 500
MAX_BATCH_ACKS = 1000
MAX_PROGRESS_TEXT = 4096
MAX_COMPLETED_TTL_MS = 30 * 24 * 3600 * 1000
# How long the agent's handler ran, in milliseconds (a fraction allowed), as it reports it.
HandlerMs = Annotated[float, Field(ge=0, le=MAX_TTL_MS, allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SendMessage(_Body):
    """``POST /v1/messages``."""

    to: AgentRef
    type: MessageType
    payload: Any = None
    correlation_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    ttl_ms: Annotated[int, Field(ge=1, le=MAX_TTL_MS)] | None = None


class SendBatch(_Body):
    """``POST /v1/messages/batch``: 1 to 500 messages, each as ``POST /v1/messages`` takes it."""

    messages: Annotated[list[SendMessage], Field(min_length=1, max_length=MAX_BATCH_MESSAGES)]


class SendRequest(_Body):
    """``POST /v1/requests``."""

    to: AgentRef
    type: MessageType
    payload: Any = None
    timeout_ms: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_MS)] = 30_000


class Nack(_Body):
    """``POST /v1/deliveries/{id}/nack`` (body optional)."""

    delay_ms: Annotated[int, Field(ge=0, le=MAX_TTL_MS)] = 0


DeliveryIds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=128)]],
    Field(min_length=1, max_length=MAX_BATCH_ACKS),
]


class Ack(_Body):
    """``POST /v1/deliveries/{id}/ack`` (body optional)."""

    handler_ms: HandlerMs | None = Field(
        default=None, description="How long the agent's handler took on the message (metrics)."
    )


class AckBatch(_Body):
    """``POST /v1/deliveries/ack``: 1 to 1000 delivery ids."""

    ids: DeliveryIds
    handler_ms: list[HandlerMs | None] | None = Field(
        default=None,
        description="How long the handler took on each message, in the order of ids (null "
        "where unknown); one entry per id (metrics).",
    )

    @model_validator(mode="after")
    def _one_time_per_id(self) -> AckBatch:
        if self.handler_ms is not None and len(self.handler_ms) != len(self.ids):
            raise ValueError(
                f"handler_ms has {len(self.handler_ms)} entries for {len(self.ids)} ids"
            )
        return self


class ExtendBatch(_Body):
    """``POST /v1/deliveries/extend``: 1 to 1000 delivery ids."""

    ids: DeliveryIds


class Completed(_Body):
    """``PUT /v1/state/completed/{id}``: how long to remember that the message was handled."""

    ttl_ms: Annotated[int, Field(ge=1, le=MAX_COMPLETED_TTL_MS)]


class Reject(_Body):
    """``POST /v1/deliveries/{id}/reject``."""

    reason: Annotated[str, Field(min_length=1, max_length=1000)]


class Reply(_Body):
    """``POST /v1/deliveries/{id}/reply``."""

    type: MessageType
    payload: Any = None


class Progress(_Body):
    """``POST /v1/deliveries/{id}/progress``: what the handler of a request is doing now."""

    text: Annotated[str, Field(min_length=1, max_length=MAX_PROGRESS_TEXT)]
    data: Any = None


class StateBody(_Body):
    """``PUT`` / ``PATCH /v1/state``."""

    state: dict[str, Any]


class Metadata(_Body):
    """``PUT /v1/self``."""

    metadata: dict[str, Any]
