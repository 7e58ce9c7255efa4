"""Response bodies of the HTTP API, as typed dicts: what every answer holds, field by field.

The routes and :mod:`mas_sidecar.api.documents` build their answers as these types (mypy checks
each field and its type there), and :mod:`mas_sidecar.api.openapi` generates the response
schemas of ``/v1/openapi.json`` from them with pydantic. Typed dicts rather than models: an
answer is a plain dict serialized by orjson, so declaring its shape costs the hot paths (a send,
a delivery event) nothing. ``tests/test_openapi.py`` checks real answers against the schemas.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict

from mas_core.error_codes import ErrorCode
from mas_sidecar.streams.registry import AgentEntry

__all__ = [
    "Accepted",
    "AckResult",
    "AgentEntry",
    "AgentSelf",
    "Agents",
    "BatchError",
    "BatchItemAccepted",
    "BatchItemRefused",
    "BatchResult",
    "BatchResults",
    "CompletedRecord",
    "DeadLetter",
    "DeadLetters",
    "Delivery",
    "Error",
    "ErrorDetail",
    "ExtendResult",
    "Health",
    "Message",
    "OpenApiDocument",
    "PolicyStatus",
    "Readiness",
    "ReplyMessage",
    "State",
]

Millis = Annotated[int, Field(description="milliseconds since the epoch")]
Code = Annotated[ErrorCode, Field(description="what failed: a stable code, never changing meaning")]

# "from" is a keyword, hence the functional form; a base only (no schema of its own).
_Document = TypedDict(
    "_Document",
    {
        "id": Annotated[str, Field(description="the message id")],
        "from": Annotated[str, Field(description="the sender's agent id, namespace/name")],
        "type": str,
        "payload": Any,
        "correlation_id": str | None,
        "created_at": Millis,
        "trace": Annotated[dict[str, str], Field(description="W3C trace context headers")],
    },
)


class ReplyMessage(_Document):
    """The reply to a ``POST /v1/requests`` call (its ``correlation_id`` is the request's id)."""


class Message(_Document):
    """A message as the agent sees it (in a dead letter; a delivery adds ``lease_ms``)."""

    attempt: Annotated[int, Field(ge=1, description="1 at the first delivery")]


class Delivery(Message):
    """The data of one delivery event of ``GET /v1/deliveries`` (``event: message``)."""

    lease_ms: Annotated[
        int, Field(ge=1, description="this sidecar's lease: answer or extend within it")
    ]


class Accepted(TypedDict):
    """A message accepted: written to the sender's stream into the target."""

    id: Annotated[str, Field(description="the id of the message sent")]


class ErrorDetail(TypedDict):
    """What failed: a stable code and a message for humans."""

    code: Code
    message: str
    reason: NotRequired[
        Annotated[
            str,
            Field(
                description="why the sidecar cannot serve now, beside redis_unavailable "
                "(starting, redis_unreachable, redis_auth_failed, functions_missing, recovering) "
                "and not_ready (loop_stopped)"
            ),
        ]
    ]


class Error(TypedDict):
    """Every error answer."""

    error: ErrorDetail


class BatchError(TypedDict):
    """Why one message of a batch was refused: what a single send would have answered."""

    code: Code
    message: str
    retry_after: NotRequired[
        Annotated[int, Field(ge=1, description="seconds: the single send's Retry-After")]
    ]


class BatchItemAccepted(TypedDict):
    """One message of a batch, accepted."""

    status: Literal[202]
    id: str


class BatchItemRefused(TypedDict):
    """One message of a batch, refused."""

    status: Annotated[int, Field(ge=400, le=599, description="the single send's HTTP status")]
    error: BatchError


BatchResult = BatchItemAccepted | BatchItemRefused


class BatchResults(TypedDict):
    """One result per message of the batch, in request order."""

    results: list[BatchResult]


class AckResult(TypedDict):
    """Both lists keep the request's order; an id given twice counts once."""

    acked: list[str]
    unknown: Annotated[list[str], Field(description="ids not leased to this sidecar")]


class ExtendResult(TypedDict):
    """Both lists keep the request's order; an id given twice counts once."""

    extended: list[str]
    unknown: Annotated[list[str], Field(description="ids not leased to this sidecar")]


class DeadLetter(TypedDict):
    """A dead letter."""

    id: str
    message: Annotated[
        Message | None, Field(description="null when the entry held no valid envelope")
    ]
    sender: Annotated[
        str | None, Field(description="the agent whose stream the entry was read from")
    ]
    reason: str
    attempts: int
    failed_at: Millis


class DeadLetters(TypedDict):
    """The agent's dead letters, oldest first."""

    dead_letters: list[DeadLetter]


class State(TypedDict):
    """The agent's state and its revision (also the ``ETag``)."""

    state: dict[str, Any]
    revision: Annotated[int, Field(ge=0, description="0 before the first write")]


class CompletedRecord(TypedDict):
    """Whether the agent recorded message ``id`` as handled."""

    id: str
    completed: bool


class Agents(TypedDict):
    """Live agents having every capability asked for (and their A2A cards, when asked)."""

    agents: list[AgentEntry]
    cards: NotRequired[list[dict[str, Any]]]  # ?format=a2a-card: their cards, in that order


class PolicyStatus(TypedDict):
    """The gateway policy of this sidecar."""

    revision: Annotated[str | None, Field(description="the revision in force")]
    error: Annotated[str | None, Field(description="why the latest published policy was rejected")]


class AgentSelf(AgentEntry):
    """This agent as its sidecar runs it (``metadata`` as discovery shows it)."""

    namespace: str
    replica: str
    roles: list[str]
    policy: PolicyStatus


class AgentCard(TypedDict, total=False):
    """This agent's A2A agent card (A2A protocol 1.0; see docs/a2a.md)."""

    name: str
    description: str
    version: str
    supportedInterfaces: list[dict[str, Any]]
    capabilities: dict[str, Any]
    defaultInputModes: list[str]
    defaultOutputModes: list[str]
    skills: list[dict[str, Any]]
    securitySchemes: dict[str, Any]
    securityRequirements: list[dict[str, Any]]


class Health(TypedDict):
    """The process runs."""

    status: Literal["ok"]


class Readiness(TypedDict):
    """The sidecar is ready."""

    status: Literal["ready"]


class OpenApiDocument(TypedDict):
    """This document."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    security: list[dict[str, list[str]]]
    components: dict[str, Any]
