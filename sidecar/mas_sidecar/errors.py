"""The sidecar's exception tree.

    SidecarError            base of everything the sidecar raises on purpose
    ├── ConfigError         bad settings at start-up (the process exits with a message)
    └── ApiError            a request fails with a stable error code (see mas.errors.ErrorCode)

Routes and components raise :class:`ApiError`; the HTTP middleware turns it into the
``{"error": {"code", "message"}}`` answer with the code's status.
"""

from __future__ import annotations

from collections.abc import Mapping

from mas.errors import HTTP_STATUS, ErrorCode


class SidecarError(Exception):
    """Base of the sidecar's own exceptions."""


class ConfigError(SidecarError):
    """A setting is missing or invalid."""


class ApiError(SidecarError):
    """A request fails with ``code``; ``headers`` are added to the answer (e.g. Retry-After)."""

    def __init__(
        self, code: ErrorCode, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]
