"""The SDK's exception tree, one class per error code a caller may want to catch.

The sidecar answers every failed request with ``{"error": {"code", "message"}}``, ``code`` one
of :class:`mas_core.error_codes.ErrorCode`; the SDK turns such answers back into exceptions:

    MasError                      anything the SDK raises on purpose
    └── SidecarError              the sidecar answered with an error document
        ├── UnknownAgentError     ``unknown_agent``: no such agent is registered
        ├── RequestTimeoutError   ``request_timeout``: no reply within ``timeout_ms``
        ├── ForbiddenError        ``forbidden``: the gateway policy does not allow the message
        ├── RateLimitedError      ``rate_limited``: too many messages; retry later
        ├── DlpBlockedError       ``dlp_blocked``: the message or metadata holds data DLP blocks
        └── RevisionConflictError ``revision_conflict``: optimistic state write lost a race

Used by the SDK's client (:func:`sidecar_error`), agent programs and the ``mas`` command.
"""

from __future__ import annotations

from mas_core.error_codes import ErrorCode


class MasError(Exception):
    """Base of every exception the SDK raises on purpose."""


class SidecarError(MasError):
    """The sidecar answered with an error document."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message} (HTTP {status})")
        self.status = status
        self.code = code
        self.message = message


class UnknownAgentError(SidecarError):
    """The target agent is not registered."""


class RequestTimeoutError(SidecarError):
    """A request got no reply within its timeout."""


class RevisionConflictError(SidecarError):
    """A conditional state write lost to a concurrent one."""


class ForbiddenError(SidecarError):
    """The gateway policy does not allow this message."""


class RateLimitedError(SidecarError):
    """The sender exceeded a rate limit."""


class DlpBlockedError(SidecarError):
    """A message (payload, type, correlation id, trace context) or the metadata being published
    holds data the DLP policy blocks."""


_BY_CODE: dict[str, type[SidecarError]] = {
    ErrorCode.UNKNOWN_AGENT: UnknownAgentError,
    ErrorCode.REQUEST_TIMEOUT: RequestTimeoutError,
    ErrorCode.REVISION_CONFLICT: RevisionConflictError,
    ErrorCode.FORBIDDEN: ForbiddenError,
    ErrorCode.RATE_LIMITED: RateLimitedError,
    ErrorCode.DLP_BLOCKED: DlpBlockedError,
}


def sidecar_error(status: int, code: str, message: str) -> SidecarError:
    """The most specific :class:`SidecarError` for an error answer."""
    return _BY_CODE.get(code, SidecarError)(status, code, message)
