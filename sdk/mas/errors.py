"""Stable error codes of the sidecar HTTP API, and the SDK's exception tree.

The sidecar answers every failed request with ``{"error": {"code", "message"}}``; ``code`` is
one of :class:`ErrorCode` and never changes meaning, ``message`` is for humans. The SDK turns
such answers back into exceptions:

    MasError                      anything the SDK raises on purpose
    ├── LeaseLostError            a delivery's lease is gone: another replica may handle it
    └── SidecarError              the sidecar answered with an error document
        ├── UnknownAgentError     ``unknown_agent``: no such agent is registered
        ├── RequestTimeoutError   ``request_timeout``: no reply within ``timeout_ms``
        ├── ForbiddenError        ``forbidden``: the gateway policy does not allow the message
        ├── RateLimitedError      ``rate_limited``: too many messages; retry after ``retry_after``
        ├── CircuitOpenError      ``circuit_open``: the target's breaker is open; retry after
        │                         ``retry_after``
        ├── DlpBlockedError       ``dlp_blocked``: the message or metadata holds data DLP blocks
        └── RevisionConflictError ``revision_conflict``: optimistic state write lost a race

Every :class:`SidecarError` carries ``retry_after``: the seconds the sidecar asked the caller to
wait (its ``Retry-After``), or None when it named none.

Used by the sidecar (to build answers), the SDK (to raise) and tests (to assert on codes).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Machine-readable error codes. Each maps to one HTTP status in :data:`HTTP_STATUS`."""

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
    ErrorCode.REDIS_UNAVAILABLE: 503,
    ErrorCode.REPLICATION_TIMEOUT: 503,
    ErrorCode.NOT_READY: 503,
    ErrorCode.INTERNAL_ERROR: 500,
}


class MasError(Exception):
    """Base of every exception the SDK raises on purpose."""


class LeaseLostError(MasError):
    """The lease of the delivery being handled is gone (it ran out, or the sidecar that held it
    is gone): the message is, or will be, delivered again, maybe to another replica. The
    handler should stop before doing its side effects twice; the SDK neither acks nor nacks it."""


class SidecarError(MasError):
    """The sidecar answered with an error document; ``retry_after``: its ``Retry-After`` in
    seconds, when it sent one."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message} (HTTP {status})")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class UnknownAgentError(SidecarError):
    """The target agent is not registered."""


class RequestTimeoutError(SidecarError):
    """A request got no reply within its timeout."""


class RevisionConflictError(SidecarError):
    """A conditional state write lost to a concurrent one."""


class ForbiddenError(SidecarError):
    """The gateway policy does not allow this message."""


class RateLimitedError(SidecarError):
    """The sender exceeded a rate limit; nothing was sent. Retry after ``retry_after`` seconds
    (or pass ``retry=`` to ``send``/``request``)."""


class CircuitOpenError(SidecarError):
    """The target's circuit breaker is open (this sender's backlog there, failed writes, or the
    target is not live); nothing was sent. Retry after ``retry_after`` seconds (or pass
    ``retry=`` to ``send``/``request``)."""


class DlpBlockedError(SidecarError):
    """A message (payload, type, correlation id, trace context) or the metadata being published
    holds data the DLP policy blocks."""


_BY_CODE: dict[str, type[SidecarError]] = {
    ErrorCode.UNKNOWN_AGENT: UnknownAgentError,
    ErrorCode.REQUEST_TIMEOUT: RequestTimeoutError,
    ErrorCode.REVISION_CONFLICT: RevisionConflictError,
    ErrorCode.FORBIDDEN: ForbiddenError,
    ErrorCode.RATE_LIMITED: RateLimitedError,
    ErrorCode.CIRCUIT_OPEN: CircuitOpenError,
    ErrorCode.DLP_BLOCKED: DlpBlockedError,
}


def sidecar_error(
    status: int, code: str, message: str, *, retry_after: float | None = None
) -> SidecarError:
    """The most specific :class:`SidecarError` for an error answer."""
    return _BY_CODE.get(code, SidecarError)(status, code, message, retry_after=retry_after)
