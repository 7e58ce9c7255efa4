"""The sidecar's exception tree.

    SidecarError            base of everything the sidecar raises on purpose
    ├── ConfigError         bad settings at start-up (the process exits with a message)
    ├── NotProvisioned      the server lacks what the control plane provides (its functions)
    └── ApiError            a request fails with a stable code (mas_core.error_codes.ErrorCode)

Routes and components raise :class:`ApiError`; the HTTP middleware turns it into the
``{"error": {"code", "message"}}`` answer with the code's status (and ``reason``, when the
error carries one: why the sidecar is not ready, see :mod:`mas_sidecar.recovery`).
"""

from __future__ import annotations

from collections.abc import Mapping

from mas_core.error_codes import HTTP_STATUS, ErrorCode


class SidecarError(Exception):
    """Base of the sidecar's own exceptions."""


class ConfigError(SidecarError):
    """A setting is missing or invalid."""


class NotProvisioned(SidecarError):
    """The server lacks the control plane's function library (or has another version)."""


class ApiError(SidecarError):
    """A request fails with ``code``; ``headers`` are added to the answer (e.g. Retry-After);
    ``reason`` is a machine-readable detail of the code (e.g. why Redis is unavailable)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.reason = reason

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]
