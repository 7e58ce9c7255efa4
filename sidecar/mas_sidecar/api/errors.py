"""HTTP error mapping: how a failed request is answered.

:class:`ApiError` is a failure of the HTTP layer itself: a body, header, query parameter or token
that the API refuses, a request that timed out, a probe that is not ready. A
:class:`~mas_sidecar.errors.Refusal` of the checks or the Streams bridge becomes one with
:meth:`ApiError.of`: the status of its code (:data:`mas_core.error_codes.HTTP_STATUS`), its
reason as the message, and ``Retry-After`` in whole seconds, at least 1, when it names a wait.
The middleware (:mod:`mas_sidecar.api.http`) answers either as the
``{"error": {"code", "message"}}`` document; a batch send gives each failed item the same code,
message and wait (:mod:`mas_sidecar.api.routes.messages`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mas_core.error_codes import HTTP_STATUS, ErrorCode
from mas_sidecar.errors import Refusal, SidecarFailure


class ApiError(SidecarFailure):
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

    @classmethod
    def of(cls, failure: ApiError | Refusal) -> ApiError:
        """How ``failure`` is answered: itself, or the answer to a refusal."""
        if isinstance(failure, ApiError):
            return failure
        wait = failure.retry_after
        headers = {"Retry-After": str(max(1, math.ceil(wait)))} if wait else None
        return cls(failure.code, failure.reason, headers, reason=failure.detail)
