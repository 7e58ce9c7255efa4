"""The sidecar's exception tree.

    SidecarFailure          base of everything the sidecar raises on purpose
    ├── ConfigError         bad settings at start-up (the process exits with a message)
    ├── NotProvisioned      the server lacks what the control plane provides (its functions)
    └── Refusal             the sidecar refuses what it was asked, with a stable code
                            (mas_core.error_codes.ErrorCode), a reason and when to retry

The checks (:mod:`mas_sidecar.checks`), the Streams bridge (:mod:`mas_sidecar.streams`) and the
set-up (:mod:`mas_sidecar.recovery`) raise :class:`Refusal` and know nothing of HTTP; only the API
turns a refusal into an answer (:mod:`mas_sidecar.api.errors`). The base is not called
``SidecarError``: that is the SDK's name for an error answer as an agent sees it
(``mas.errors.SidecarError``).
"""

from __future__ import annotations

from mas_core.error_codes import ErrorCode


class SidecarFailure(Exception):
    """Base of the sidecar's own exceptions."""


class ConfigError(SidecarFailure):
    """A setting is missing or invalid."""


class NotProvisioned(SidecarFailure):
    """The server lacks the control plane's function library (or has another version)."""


class Refusal(SidecarFailure):
    """The sidecar refuses what it was asked: ``code`` says why (stable), ``reason`` in words;
    ``retry_after`` is how many seconds to wait before the same request may pass (None: waiting
    does not help); ``detail`` is a machine-readable detail of the code (why Redis is
    unavailable, see :class:`mas_sidecar.recovery.Reason`)."""

    def __init__(
        self,
        code: ErrorCode,
        reason: str,
        retry_after: float | None = None,
        *,
        detail: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.retry_after = retry_after
        self.detail = detail
