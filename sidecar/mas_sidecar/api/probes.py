"""The second listener's application: ``/metrics``, ``/healthz`` and ``/readyz``, nothing else.

The message API listens on 127.0.0.1 only, which neither Prometheus nor (without
``hostNetwork``) the kubelet can reach. With ``MAS_METRICS_ADDRESS`` set (the operator sets
``0.0.0.0:9090`` in pods), :mod:`mas_sidecar.api.server` serves this application on that
address too. It shares the sidecar's components and metrics but none of the API's routes: every
other path is answered ``404 not_found`` (``405 method_not_allowed`` for another method on a
probe) with the standard error document, before any body is read and whatever token the
request presents, so no message, state or dead letter can be reached from the pod network.

Built by :mod:`mas_sidecar.main` from the API's application.
"""

from __future__ import annotations

from aiohttp import web

from mas_core.error_codes import ErrorCode
from mas_sidecar.api.http import (
    API_TOKEN,
    BODY_TIMEOUT,
    COMPONENTS,
    METRICS_KEY,
    Handler,
    error_response,
    middleware,
)
from mas_sidecar.api.routes import system

PATHS = ("/metrics", "/healthz", "/readyz")
MAX_CONNECTIONS = 16  # a scraper and a kubelet need a few; nobody needs many
_ELSEWHERE = "this listener serves only /metrics, /healthz and /readyz"


@web.middleware
async def only_probes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a path or method this listener does not serve at once (nothing is read)."""
    refused = request.match_info.http_exception
    if refused is None:
        return await handler(request)
    if refused.status == 405:
        return error_response(
            ErrorCode.METHOD_NOT_ALLOWED, f"{_ELSEWHERE}, with GET", 405, {"Allow": "GET"}
        )
    return error_response(ErrorCode.NOT_FOUND, _ELSEWHERE, 404)


def build_probes_app(api: web.Application) -> web.Application:
    """The probes' application, sharing ``api``'s components and metrics; no token is taken."""
    app = web.Application(middlewares=[only_probes, middleware], client_max_size=1024)
    app[METRICS_KEY] = api[METRICS_KEY]
    app[COMPONENTS] = api[COMPONENTS]
    app[BODY_TIMEOUT] = api[BODY_TIMEOUT]
    app[API_TOKEN] = None  # the probes need none, and nothing else is served here
    app.router.add_get("/metrics", system.metrics)
    app.router.add_get("/healthz", system.healthz)
    app.router.add_get("/readyz", system.readyz)
    return app
