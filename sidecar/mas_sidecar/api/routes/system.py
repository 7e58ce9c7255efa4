"""``/healthz``, ``/readyz``, ``/metrics`` and ``/v1/openapi.json``."""

from __future__ import annotations

import functools

import orjson
from aiohttp import web

from mas_core.error_codes import ErrorCode
from mas_sidecar.api.errors import ApiError
from mas_sidecar.api.http import components, json_response
from mas_sidecar.api.responses import Health, Readiness
from mas_sidecar.recovery import Problem, Reason, problem_of
from mas_sidecar.streams.errors import REDIS_ERRORS

routes = web.RouteTableDef()
_UNREACHABLE = Problem(Reason.REDIS_UNREACHABLE, "Redis cannot be reached")


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response(Health(status="ok"))


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when Redis answers, the sidecar is set up on it, every background loop runs, and
    the agent's own identity token can sign messages; else 503 with the code and ``reason``."""
    parts = components(request)
    try:
        await parts.redis.ping()
    except REDIS_ERRORS as exc:
        raise ApiError(
            ErrorCode.REDIS_UNAVAILABLE, "Redis cannot be reached", {"Retry-After": "1"},
            reason=(problem_of(exc) or _UNREACHABLE).reason.value,
        ) from None  # fmt: skip
    parts.recovery.check_writable()
    stopped = parts.loops.not_running()
    if stopped:
        raise ApiError(
            ErrorCode.NOT_READY, f"background loops not running: {', '.join(stopped)}",
            {"Retry-After": "1"}, reason="loop_stopped",
        )  # fmt: skip
    unusable = parts.credentials.unusable() if parts.credentials is not None else None
    if unusable is not None:
        raise ApiError(ErrorCode.CREDENTIALS_EXPIRED, unusable, {"Retry-After": "1"})
    return json_response(Readiness(status="ready"))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    parts = components(request)
    for state, count in parts.breakers.counts().items():
        parts.metrics.circuits.labels(state.name).set(count)
    return web.Response(
        body=parts.metrics.render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_openapi(), content_type="application/json")


@functools.cache
def _openapi() -> bytes:
    """The document, built once, when first asked for (not while the sidecar starts: its
    module, and pydantic's JSON-schema generator with it, load only then)."""
    from mas_sidecar.api.openapi import build_openapi  # noqa: PLC0415 - lazy, see above

    return orjson.dumps(build_openapi())
