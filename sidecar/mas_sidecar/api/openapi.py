"""The OpenAPI 3.1 description of the HTTP API, built from the request models.

Served on ``GET /v1/openapi.json``; request schemas come from :mod:`mas_sidecar.api.models`, so the
document cannot drift from what the routes accept. Every operation needs the agent's bearer
token (:mod:`mas_core.sidecar_token`) except the probes (:data:`mas_sidecar.api.http.OPEN_PATHS`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from mas_core.error_codes import ErrorCode
from mas_sidecar.api import models
from mas_sidecar.api.http import OPEN_PATHS

_OPERATIONS: list[tuple[str, str, str, type[BaseModel] | None, dict[str, str]]] = [
    ("post", "/v1/messages", "Send a message", models.SendMessage, {"202": "accepted: {id}"}),
    ("post", "/v1/messages/batch", "Send up to 500 messages, one result each", models.SendBatch,
     {"200": "{results: [{status: 202, id} | {status, error: {code, message}}]}, in order"}),
    ("post", "/v1/requests", "Send a request and wait for its reply", models.SendRequest,
     {"200": "the reply: {id, from, type, payload, correlation_id}", "504": "no reply in time"}),
    ("get", "/v1/deliveries", "Stream deliveries (server-sent events)", None,
     {"200": "text/event-stream; event data {id, from, type, payload, attempt, correlation_id,"
             " created_at, trace, lease_ms}",
      "429": "too many delivery streams open"}),
    ("post", "/v1/deliveries/ack", "Acknowledge up to 1000 deliveries at once", models.AckBatch,
     {"200": "{acked: [id], unknown: [id]}"}),
    ("post", "/v1/deliveries/extend", "Extend the leases of up to 1000 deliveries at once",
     models.ExtendBatch, {"200": "{extended: [id], unknown: [id]}"}),
    ("post", "/v1/deliveries/{id}/ack", "Acknowledge a delivery", None, {"204": "done"}),
    ("post", "/v1/deliveries/{id}/nack", "Refuse a delivery (redeliver after delay_ms)",
     models.Nack, {"204": "will be redelivered"}),
    ("post", "/v1/deliveries/{id}/extend", "Extend a delivery's lease", None, {"204": "extended"}),
    ("post", "/v1/deliveries/{id}/reject", "Dead-letter a delivery now", models.Reject,
     {"204": "dead-lettered"}),
    ("post", "/v1/deliveries/{id}/reply", "Reply to a delivery", models.Reply,
     {"202": "accepted: {id}"}),
    ("get", "/v1/dead-letters", "List dead letters (?limit=N)", None,
     {"200": "{dead_letters: [...]}"}),
    ("post", "/v1/dead-letters/{id}/replay", "Put a dead letter back in the inbox", None,
     {"202": "accepted: {id}", "409": "it would no longer authenticate: the sender must resend"}),
    ("delete", "/v1/dead-letters/{id}", "Delete a dead letter", None, {"204": "deleted"}),
    ("get", "/v1/state", "Read the agent's state", None, {"200": "{state, revision}"}),
    ("put", "/v1/state", "Replace the state (If-Match: revision)", models.StateBody,
     {"200": "{state, revision}", "412": "revision conflict"}),
    ("patch", "/v1/state", "Merge-patch the state (RFC 7386)", models.StateBody,
     {"200": "{state, revision}", "412": "revision conflict"}),
    ("get", "/v1/state/completed/{id}", "Whether the agent recorded message id as handled",
     None, {"200": "{id, completed}"}),
    ("put", "/v1/state/completed/{id}", "Record message id as handled, for ttl_ms",
     models.Completed, {"204": "recorded"}),
    ("get", "/v1/agents", "Discover live agents (?capability=X, repeatable)", None,
     {"200": "{agents: [{id, capabilities, metadata}]}"}),
    ("get", "/v1/self", "This agent's id, replica, capabilities and metadata", None,
     {"200": "{id, namespace, replica, capabilities, metadata}"}),
    ("put", "/v1/self", "Publish this agent's metadata (through DLP)", models.Metadata,
     {"200": "{id, namespace, replica, capabilities, metadata}: the metadata as published",
      "422": "dlp_blocked: the policy blocks data in it"}),
    ("get", "/healthz", "Liveness", None, {"200": "alive"}),
    ("get", "/readyz", "Readiness (set up on Redis, loops running, identity token valid)", None,
     {"200": "ready", "503": "not ready"}),
    ("get", "/metrics", "Prometheus metrics", None, {"200": "text exposition format"}),
]  # fmt: skip

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": [code.value for code in ErrorCode]},
                "message": {"type": "string"},
                "reason": {
                    "type": "string",
                    "description": "why the sidecar is not ready (redis_unavailable, not_ready)",
                },
            },
        }
    },
}


def build_openapi() -> dict[str, Any]:
    """The whole OpenAPI document."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, body, answers in _OPERATIONS:
        responses: dict[str, Any] = {
            status: {"description": text} for status, text in answers.items()
        }
        responses["default"] = {
            "description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        operation: dict[str, Any] = {"summary": summary, "responses": responses}
        if path in OPEN_PATHS:
            operation["security"] = []
        if "{id}" in path:
            operation["parameters"] = [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ]
        if body is not None:
            operation["requestBody"] = {
                "required": body is not models.Nack,
                "content": {"application/json": {"schema": body.model_json_schema()}},
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "mas sidecar", "version": "1"},
        "paths": paths,
        "security": [{"agentToken": []}],
        "components": {
            "schemas": {"Error": _ERROR_SCHEMA},
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
