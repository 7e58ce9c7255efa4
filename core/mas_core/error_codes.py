"""Stable error codes of the sidecar HTTP API, and the HTTP status of each.

The sidecar answers every failed request with ``{"error": {"code", "message"}}``; ``code`` is
one of :class:`ErrorCode` and never changes meaning, ``message`` is for humans.

Used by the sidecar (to build answers), the SDK (:mod:`mas.errors`, to raise the matching
exception) and tests (to assert on codes).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Machine-readable error codes; each is answered with one HTTP status (``HTTP_STATUS``)."""

    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    INVALID_AGENT_ID = "invalid_agent_id"
    INVALID_REVISION = "invalid_revision"
    BODY_TOO_LARGE = "body_too_large"
    BODY_TIMEOUT = "body_timeout"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNAUTHENTICATED_CLIENT = "unauthenticated_client"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNKNOWN_AGENT = "unknown_agent"
    DELIVERY_NOT_FOUND = "delivery_not_found"
    ALREADY_REPLIED = "already_replied"
    NOT_A_REQUEST = "not_a_request"
    DEAD_LETTER_NOT_FOUND = "dead_letter_not_found"
    DEAD_LETTER_UNAUTHENTICATED = "dead_letter_unauthenticated"
    REVISION_CONFLICT = "revision_conflict"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_SUBSCRIBERS = "too_many_subscribers"
    DLP_BLOCKED = "dlp_blocked"
    CIRCUIT_OPEN = "circuit_open"
    POLICY_UNAVAILABLE = "policy_unavailable"
    CREDENTIALS_UNAVAILABLE = "credentials_unavailable"
    CREDENTIALS_EXPIRED = "credentials_expired"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    REQUEST_TIMEOUT = "request_timeout"
    REMOTE_UNAVAILABLE = "remote_unavailable"
    REDIS_UNAVAILABLE = "redis_unavailable"
    REPLICATION_TIMEOUT = "replication_timeout"
    NOT_READY = "not_ready"
    INTERNAL_ERROR = "internal_error"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.INVALID_AGENT_ID: 400,
    ErrorCode.INVALID_REVISION: 400,
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.BODY_TIMEOUT: 408,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.UNAUTHENTICATED_CLIENT: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.UNKNOWN_AGENT: 404,
    ErrorCode.DELIVERY_NOT_FOUND: 404,
    ErrorCode.ALREADY_REPLIED: 409,
    ErrorCode.NOT_A_REQUEST: 409,
    ErrorCode.DEAD_LETTER_NOT_FOUND: 404,
    ErrorCode.DEAD_LETTER_UNAUTHENTICATED: 409,
    ErrorCode.REVISION_CONFLICT: 412,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_MANY_SUBSCRIBERS: 429,
    ErrorCode.DLP_BLOCKED: 422,
    ErrorCode.CIRCUIT_OPEN: 503,
    ErrorCode.POLICY_UNAVAILABLE: 503,
    ErrorCode.CREDENTIALS_UNAVAILABLE: 503,
    ErrorCode.CREDENTIALS_EXPIRED: 503,
    ErrorCode.TOO_MANY_CONNECTIONS: 503,
    ErrorCode.REQUEST_TIMEOUT: 504,
    ErrorCode.REMOTE_UNAVAILABLE: 502,
    ErrorCode.REDIS_UNAVAILABLE: 503,
    ErrorCode.REPLICATION_TIMEOUT: 503,
    ErrorCode.NOT_READY: 503,
    ErrorCode.INTERNAL_ERROR: 500,
}
