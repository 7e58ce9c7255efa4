"""The SDK's exception tree, one class per error code a caller may want to catch.

The sidecar answers every failed request with ``{"error": {"code", "message"}}``, ``code`` one
of :class:`mas_core.error_codes.ErrorCode`; the SDK turns such answers back into exceptions:

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

Used by the SDK's client (:func:`sidecar_error`), agent programs and the ``mas`` command.
"""

from __future__ import annotations

from mas_core.error_codes import ErrorCode


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
