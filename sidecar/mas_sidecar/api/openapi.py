"""The OpenAPI 3.1 description of the HTTP API, served on ``GET /v1/openapi.json``.

Generated, not written: every schema of a body or a parameter comes from the types the routes use,
through pydantic — request bodies from the models of :mod:`mas_sidecar.api.models` (which the routes
validate bodies with), answers from the typed dicts of :mod:`mas_sidecar.api.responses` (which the
routes and :mod:`mas_sidecar.api.documents` build them as; mypy checks each field there), the
error body's ``code`` from :class:`mas_core.error_codes.ErrorCode`, and each error status from
:data:`mas_core.error_codes.HTTP_STATUS` of the codes an operation may answer. Written by hand
here is only the list of operations below (path, method, ``operationId``, summary, parameters,
success status and type, the error codes each may answer) and the headers of the answers
(``ETag``, ``Retry-After``, ``WWW-Authenticate``).

What keeps the document from drifting from the answers is ``tests/test_openapi.py``: it checks
that the app registers exactly the operations listed here, then calls every one of them on a real
sidecar and validates each answer, successes and errors alike, against the schema the document
declares for its status (with no field beyond those declared). Every operation needs the agent's
bearer token (:mod:`mas_core.sidecar_token`) except the probes
(:data:`mas_sidecar.api.http.OPEN_PATHS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from mas_core.error_codes import HTTP_STATUS, ErrorCode
from mas_sidecar.api import models, responses
from mas_sidecar.api.http import OPEN_PATHS

_COMPONENTS = "#/components/schemas/"
E = ErrorCode
# What may refuse any operation (the connection cap, the body's size and time, a bug) ...
_ANY = (E.TOO_MANY_CONNECTIONS, E.BODY_TIMEOUT, E.BODY_TOO_LARGE, E.INTERNAL_ERROR)
# ... any operation but the probes ...
_TOKEN = (E.UNAUTHENTICATED_CLIENT,)
# ... one that works on Redis ...
_REDIS = (E.REDIS_UNAVAILABLE,)
# ... one that takes a JSON body ...
_BODY = (E.INVALID_JSON, E.INVALID_REQUEST, E.UNSUPPORTED_MEDIA_TYPE)
# ... and one that sends a message, through the gateway checks.
_SEND = (
    E.INVALID_AGENT_ID, E.UNKNOWN_AGENT, E.FORBIDDEN, E.DLP_BLOCKED, E.RATE_LIMITED,
    E.CIRCUIT_OPEN, E.POLICY_UNAVAILABLE, E.CREDENTIALS_UNAVAILABLE, E.CREDENTIALS_EXPIRED,
    E.REPLICATION_TIMEOUT,
)  # fmt: skip
_RETRY_AFTER_STATUSES = frozenset({429, 503})

# Parameters, their schemas generated like the bodies'.
_ID = {"name": "id", "in": "path", "required": True, "type": Annotated[str, Field(min_length=1)]}
_MESSAGE_ID = {**_ID, "description": "a message id (128 characters at most)"}
_TRACE = [
    {"name": name, "in": "header", "required": False,
     "type": Annotated[str, Field(description="W3C trace context; travels with the message")]}
    for name in ("traceparent", "tracestate")
]  # fmt: skip
_IF_MATCH = {
    "name": "If-Match", "in": "header", "required": False,
    "type": Annotated[str, Field(description='the revision expected: N or "N"; * or absent: any')],
}  # fmt: skip
_LIMIT = {
    "name": "limit", "in": "query", "required": False,
    "type": Annotated[int, Field(ge=1, le=1000, description="how many, oldest first")],
}  # fmt: skip
_CAPABILITY = {
    "name": "capability", "in": "query", "required": False, "explode": True,
    "type": Annotated[
        list[Annotated[str, Field(max_length=253)]],
        Field(max_length=32, description="only agents having every capability listed"),
    ],
}  # fmt: skip
_FORMAT = {
    "name": "format", "in": "query", "required": False,
    "type": Annotated[
        Literal["mas", "a2a-card"],
        Field(description="a2a-card: also the agents' A2A cards (cards)"),
    ],
}  # fmt: skip


@dataclass(frozen=True)
class Operation:
    """One operation of the API: what the document says of it."""

    method: str
    path: str
    operation_id: str
    summary: str
    status: int  # of success
    answer: Any  # its body's type (a typed dict, str), or None: no body
    errors: Sequence[ErrorCode] = ()  # besides those of _ANY, _TOKEN (not the probes)
    body: type[BaseModel] | None = None
    body_optional: bool = False
    parameters: Sequence[dict[str, Any]] = ()
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)  # of the success answer: description


R = responses
_ETAG = {"ETag": 'the revision, quoted: "N"'}
OPERATIONS: tuple[Operation, ...] = (
    Operation("post", "/v1/messages", "sendMessage", "Send a message", 202, R.Accepted,
              (*_BODY, *_SEND, *_REDIS), models.SendMessage, parameters=_TRACE),
    Operation("post", "/v1/messages/batch", "sendBatch",
              "Send up to 500 messages, one result each, in order", 200, R.BatchResults,
              (*_BODY, *_REDIS), models.SendBatch, parameters=_TRACE),
    Operation("post", "/v1/requests", "sendRequest", "Send a request and wait for its reply",
              200, R.ReplyMessage, (*_BODY, *_SEND, *_REDIS, E.REQUEST_TIMEOUT),
              models.SendRequest, parameters=_TRACE),
    Operation("get", "/v1/deliveries", "streamDeliveries",
              "Stream deliveries (server-sent events)", 200, R.Delivery,
              (E.TOO_MANY_SUBSCRIBERS, *_REDIS), media_type="text/event-stream"),
    Operation("post", "/v1/deliveries/ack", "ackDeliveries",
              "Acknowledge up to 1000 deliveries at once", 200, R.AckResult,
              (*_BODY, *_REDIS), models.AckBatch),
    Operation("post", "/v1/deliveries/extend", "extendDeliveries",
              "Extend the leases of up to 1000 deliveries at once", 200, R.ExtendResult,
              (*_BODY, *_REDIS), models.ExtendBatch),
    Operation("post", "/v1/deliveries/{id}/ack", "ackDelivery", "Acknowledge a delivery", 204,
              None, (*_BODY, E.DELIVERY_NOT_FOUND, *_REDIS), models.Ack, body_optional=True,
              parameters=[_ID]),
    Operation("post", "/v1/deliveries/{id}/nack", "nackDelivery",
              "Refuse a delivery: redeliver it after delay_ms", 204, None,
              (*_BODY, E.DELIVERY_NOT_FOUND, *_REDIS), models.Nack, body_optional=True,
              parameters=[_ID]),
    Operation("post", "/v1/deliveries/{id}/extend", "extendDelivery", "Extend a delivery's lease",
              204, None, (E.DELIVERY_NOT_FOUND, *_REDIS), parameters=[_ID]),
    Operation("post", "/v1/deliveries/{id}/reject", "rejectDelivery",
              "Dead-letter a delivery now", 204, None, (*_BODY, E.DELIVERY_NOT_FOUND, *_REDIS),
              models.Reject, parameters=[_ID]),
    Operation("post", "/v1/deliveries/{id}/reply", "replyToDelivery", "Reply to a delivery", 202,
              R.Accepted, (*_BODY, E.DELIVERY_NOT_FOUND, E.ALREADY_REPLIED, *_SEND, *_REDIS),
              models.Reply, parameters=[_ID]),
    Operation("post", "/v1/deliveries/{id}/progress", "reportProgress",
              "Report progress on a request being handled, before its reply", 202, R.Accepted,
              (*_BODY, E.DELIVERY_NOT_FOUND, E.NOT_A_REQUEST, E.ALREADY_REPLIED, *_SEND,
               *_REDIS), models.Progress, parameters=[_ID]),
    Operation("get", "/v1/dead-letters", "listDeadLetters", "List the agent's dead letters", 200,
              R.DeadLetters, (E.INVALID_REQUEST, *_REDIS), parameters=[_LIMIT]),
    Operation("post", "/v1/dead-letters/{id}/replay", "replayDeadLetter",
              "Put a dead letter back into its sender's stream", 202, R.Accepted,
              (E.DEAD_LETTER_NOT_FOUND, E.DEAD_LETTER_UNAUTHENTICATED, *_REDIS),
              parameters=[_ID]),
    Operation("delete", "/v1/dead-letters/{id}", "deleteDeadLetter", "Delete a dead letter", 204,
              None, (E.DEAD_LETTER_NOT_FOUND, *_REDIS), parameters=[_ID]),
    Operation("get", "/v1/state", "getState", "Read the agent's state", 200, R.State, _REDIS,
              headers=_ETAG),
    Operation("put", "/v1/state", "replaceState", "Replace the state (If-Match: revision)", 200,
              R.State, (*_BODY, E.INVALID_REVISION, E.REVISION_CONFLICT, *_REDIS),
              models.StateBody, parameters=[_IF_MATCH], headers=_ETAG),
    Operation("patch", "/v1/state", "patchState", "Merge-patch the state (RFC 7386)", 200,
              R.State, (*_BODY, E.INVALID_REVISION, E.REVISION_CONFLICT, *_REDIS),
              models.StateBody, parameters=[_IF_MATCH], headers=_ETAG),
    Operation("get", "/v1/state/completed/{id}", "getCompleted",
              "Whether the agent recorded message id as handled", 200, R.CompletedRecord,
              (E.INVALID_REQUEST, *_REDIS), parameters=[_MESSAGE_ID]),
    Operation("put", "/v1/state/completed/{id}", "recordCompleted",
              "Record message id as handled, for ttl_ms", 204, None, (*_BODY, *_REDIS),
              models.Completed, parameters=[_MESSAGE_ID]),
    Operation("get", "/v1/agents", "discoverAgents", "Discover live agents", 200, R.Agents,
              (E.INVALID_REQUEST, *_REDIS), parameters=[_CAPABILITY, _FORMAT]),
    Operation("get", "/.well-known/agent-card.json", "getAgentCard", "This agent's A2A card",
              200, R.AgentCard),
    Operation("get", "/v1/self", "getSelf",
              "This agent: id, capabilities, metadata, namespace, replica, roles, policy", 200,
              R.AgentSelf),
    Operation("put", "/v1/self", "publishMetadata", "Publish this agent's metadata (through DLP)",
              200, R.AgentSelf, (*_BODY, E.DLP_BLOCKED, E.POLICY_UNAVAILABLE, *_REDIS),
              models.Metadata),
    Operation("get", "/healthz", "checkLiveness", "Liveness: the process runs", 200, R.Health),
    Operation("get", "/readyz", "checkReadiness",
              "Readiness: set up on Redis, loops running, identity token valid", 200, R.Readiness,
              (E.REDIS_UNAVAILABLE, E.NOT_READY, E.CREDENTIALS_EXPIRED)),
    Operation("get", "/metrics", "getMetrics", "Prometheus metrics", 200, str,
              media_type="text/plain"),
    Operation("get", "/v1/openapi.json", "getOpenApi", "This document", 200,
              R.OpenApiDocument),
)  # fmt: skip


def _schemas() -> tuple[dict[tuple[str, JsonSchemaMode], Any], dict[str, Any]]:
    """Every type's schema, keyed by name, and the named ones (``components.schemas``)."""
    types: dict[str, tuple[Any, JsonSchemaMode]] = {"Error": (responses.Error, "serialization")}
    for operation in OPERATIONS:
        if operation.answer is not None:
            types[_name(operation.answer)] = (operation.answer, "serialization")
        if operation.body is not None:
            types[operation.body.__name__] = (operation.body, "validation")
        for parameter in operation.parameters:
            types[_parameter_key(parameter)] = (parameter["type"], "validation")
    inputs = [(name, mode, TypeAdapter(kind)) for name, (kind, mode) in types.items()]
    found, definitions = TypeAdapter.json_schemas(inputs, ref_template=_COMPONENTS + "{model}")
    return found, definitions.get("$defs", {})


def _name(kind: Any) -> str:
    return str(getattr(kind, "__name__", kind))


def _parameter_key(parameter: dict[str, Any]) -> str:
    return f"{parameter['in']}:{parameter['name']}"


def _inlined(schema: Any, named: dict[str, Any]) -> Any:
    """``schema`` with every reference to a named schema replaced by that schema, what stands
    beside the reference (a description) kept (none of them refers to itself)."""
    if isinstance(schema, dict):
        inlined = {key: _inlined(value, named) for key, value in schema.items() if key != "$ref"}
        reference = schema.get("$ref")
        if isinstance(reference, str) and reference.startswith(_COMPONENTS):
            return _inlined(named[reference.removeprefix(_COMPONENTS)], named) | inlined
        return inlined
    if isinstance(schema, list):
        return [_inlined(item, named) for item in schema]
    return schema


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error_answers(operation: Operation) -> dict[str, Any]:
    """One answer per error status the operation may give, naming its codes."""
    codes = [*operation.errors, *_ANY, *(() if operation.path in OPEN_PATHS else _TOKEN)]
    by_status: dict[int, list[ErrorCode]] = {}
    for code in codes:
        listed = by_status.setdefault(HTTP_STATUS[code], [])
        if code not in listed:
            listed.append(code)
    answers: dict[str, Any] = {}
    for status, listed in sorted(by_status.items()):
        answer: dict[str, Any] = {
            "description": ", ".join(f"`{code.value}`" for code in listed),
            "content": _json({"$ref": _COMPONENTS + "Error"}),
        }
        if status in _RETRY_AFTER_STATUSES:
            answer["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before retrying, when the refusal names a wait",
                    "schema": {"type": "integer", "minimum": 1},
                }
            }
        if ErrorCode.UNAUTHENTICATED_CLIENT in listed:
            answer["headers"] = {
                "WWW-Authenticate": {"required": True, "schema": {"type": "string"}}
            }
        answers[str(status)] = answer
    return answers


def _success_answer(operation: Operation, found: dict[Any, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": operation.summary}
    if operation.answer is not None:
        schema = found[(_name(operation.answer), "serialization")]
        if operation.media_type == "text/event-stream":
            answer["description"] = (
                "server-sent events: `event: message`, `id: <message id>`, `data: <JSON>` "
                "per delivery (the data's schema is `x-event-data`); a `: keepalive` comment "
                "every 15 s"
            )
            answer["content"] = {
                "text/event-stream": {"schema": {"type": "string"}, "x-event-data": schema}
            }
        else:
            answer["content"] = {operation.media_type: {"schema": schema}}
    if operation.headers:
        answer["headers"] = {
            name: {"description": text, "required": True, "schema": {"type": "string"}}
            for name, text in operation.headers.items()
        }
    return answer


def _operation(
    operation: Operation, found: dict[Any, Any], named: dict[str, Any]
) -> dict[str, Any]:
    answers = {str(operation.status): _success_answer(operation, found)}
    answers |= _error_answers(operation)
    answers["default"] = {
        "description": "an error",
        "content": _json({"$ref": _COMPONENTS + "Error"}),
    }
    document: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "responses": answers,
    }
    if operation.path in OPEN_PATHS:
        document["security"] = []
    if operation.parameters:
        document["parameters"] = [
            {
                **{key: value for key, value in parameter.items() if key != "type"},
                "schema": found[(_parameter_key(parameter), "validation")],
            }
            for parameter in operation.parameters
        ]
    if operation.body is not None:
        # The body's own schema in place (what it refers to stays in components.schemas).
        schema = named[operation.body.__name__]
        document["requestBody"] = {
            "required": not operation.body_optional,
            "content": _json(schema),
        }
    return document


def build_openapi() -> responses.OpenApiDocument:
    """The whole OpenAPI document."""
    found, named = _schemas()
    # The error body in full, as clients read it: its code's enum in place.
    named["Error"] = _inlined(named["Error"], named)
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method] = _operation(operation, found, named)
    return {
        "openapi": "3.1.0",
        "info": {"title": "mas sidecar", "version": "1"},
        "paths": paths,
        "security": [{"agentToken": []}],
        "components": {
            "schemas": dict(sorted(named.items())),
            "securitySchemes": {
                "agentToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the agent's token: $MAS_SIDECAR_TOKEN "
                    "(401 unauthenticated_client without it)",
                }
            },
        },
    }
