"""HTTP plumbing shared by every route: the app's keys, JSON bodies, error answers and request
metrics.

``read_body`` parses and validates a request body into a pydantic model, raising
:class:`~mas_sidecar.api.errors.ApiError` with a stable code for each way a body can be wrong;
the ``middleware`` turns every failure (an ``ApiError``, a check's or the bridge's
:class:`~mas_sidecar.errors.Refusal`, aiohttp's, Redis's, or a bug) into the
``{"error": {"code", "message"}}`` document, so no input can take the process down. It also
bounds how long a body may take to arrive (``BODY_TIMEOUT``, ``MAS_BODY_TIMEOUT_MS``): a client
that trickles its body is answered ``408 body_timeout`` and its connection closed, instead of
holding a handler forever (the other connection bounds are in :mod:`mas_sidecar.api.server`).

Before anything else, the middleware checks that the request carries the agent's token
(``API_TOKEN``, see :mod:`mas_core.sidecar_token`): the API listens on a loopback that other local
processes share (every process of the machine in local mode, every pod with ``hostNetwork``),
so the token, not the address, is what makes a caller the sidecar's own agent. Only the probes
(``OPEN_PATHS``) answer without it; the comparison takes the same time whatever the token
presented, and the body of a refused request is never read.

Used by :mod:`mas_sidecar.api.app` (the middleware and the keys) and by every route.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
import redis.exceptions
from aiohttp import web
from pydantic import BaseModel, ValidationError

from mas_core.error_codes import ErrorCode
from mas_core.sidecar_token import SCHEME, presented
from mas_core.telemetry.tracing import TRACE_HEADERS
from mas_sidecar.api.errors import ApiError
from mas_sidecar.api.responses import Error, ErrorDetail
from mas_sidecar.components import Components
from mas_sidecar.errors import Refusal
from mas_sidecar.metrics import Metrics
from mas_sidecar.recovery import Problem, Reason, problem_of
from mas_sidecar.streams.errors import REDIS_ERRORS

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

METRICS_KEY = web.AppKey("metrics", Metrics)
COMPONENTS = web.AppKey("components", Components)
BODY_TIMEOUT = web.AppKey("body_timeout", float)  # seconds
# The token requests must present (bytes, for the comparison); None serves every caller.
API_TOKEN: web.AppKey[bytes | None] = web.AppKey("api_token")
# The outbound A2A client, made on the first request to an external agent (only then imported:
# mas_sidecar.api.a2a.remote), under the key "client"; closed with the app.
REMOTES: web.AppKey[dict[str, Any]] = web.AppKey("remotes")
ARRIVED = web.RequestKey("arrived", float)  # time.perf_counter() when the middleware took it
OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # what the kubelet and ``mas up`` probe
_JSON_TYPES = ("application/json",)
MAX_JSON_DEPTH = 64  # far beyond real payloads; well below what the JSON encoders can nest
# A JSON string (skipped whole) or one bracket.
_JSON_STRUCTURE = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]', re.DOTALL)


def components(request: web.Request) -> Components:
    """The sidecar's components, as the app built them."""
    return request.app[COMPONENTS]


def trace_headers(request: web.Request) -> dict[str, str]:
    """The W3C trace context headers of ``request`` (each cut to 512 characters)."""
    return {name: request.headers[name][:512] for name in TRACE_HEADERS if name in request.headers}


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON answer serialized with orjson."""
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def error_response(
    code: ErrorCode,
    message: str,
    status: int,
    headers: Mapping[str, str] | None = None,
    reason: str | None = None,
) -> web.Response:
    error: ErrorDetail = {"code": code, "message": message}
    if reason is not None:
        error["reason"] = reason
    return json_response(Error(error=error), status, headers)


async def read_json(request: web.Request, *, extra_depth: int = 0) -> Any:
    """The request body as JSON (``None`` when empty); raises ApiError for anything else.

    ``extra_depth`` raises the nesting limit for bodies that wrap other bodies (a batch holds
    each message two levels down, so its payloads may nest as deep as a single send's).
    """
    body = await request.read()
    if not body:
        return None
    ctype = request.content_type  # aiohttp reports a missing Content-Type as octet-stream
    if not (ctype in _JSON_TYPES or ctype.endswith("+json") or ctype == "application/octet-stream"):
        raise ApiError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"send JSON with Content-Type: application/json, not {ctype}",
        )
    limit = MAX_JSON_DEPTH + extra_depth
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson 3.13 and later refuse deep nesting themselves (beyond 1,024 levels), older
        # ones parse it: the answer must not depend on which one is installed.
        if _text_nests_deeper(body, limit):
            raise _too_deep(limit) from None
        raise ApiError(ErrorCode.INVALID_JSON, f"the body is not valid JSON: {exc.msg}") from None
    if too_deep(data, limit):
        raise _too_deep(limit)
    return data


def _too_deep(limit: int) -> ApiError:
    return ApiError(ErrorCode.INVALID_REQUEST, f"the body nests deeper than {limit} levels")


def _text_nests_deeper(body: bytes, limit: int) -> bool:
    """True when the JSON text ``body`` opens more than ``limit`` brackets before closing them;
    strings are skipped whole. Only for bodies the parser refused, so it may be slower."""
    depth = 0
    for token in _JSON_STRUCTURE.finditer(body):
        bracket = token.group()
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif bracket in (b"]", b"}"):
            depth -= 1
    return False


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``value`` nests lists and objects deeper than ``limit`` levels.

    Every JSON encoder on the way (orjson, pydantic, other languages' SDKs) handles that many
    levels; checked iteratively, so no input can exhaust the stack. (orjson reads integers
    beyond 64 bits as floats, so numbers need no check.)
    """
    if not isinstance(value, dict | list):
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack += [(child, depth + 1) for child in children if isinstance(child, dict | list)]
    return False


async def read_body(
    request: web.Request, model: type[ModelT], *, optional: bool = False, extra_depth: int = 0
) -> ModelT:
    """The body validated as ``model``; an empty body is ``model()`` when ``optional``."""
    data = await read_json(request, extra_depth=extra_depth)
    if data is None and optional:
        data = {}
    if not isinstance(data, dict):
        raise ApiError(ErrorCode.INVALID_JSON, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(ErrorCode.INVALID_REQUEST, describe(exc)) from None


def body_taken(request: web.Request, messages: int = 1) -> None:
    """The body of a request carrying ``messages`` messages is read, parsed and validated:
    time the ``http_in`` stage, from when the middleware took the request (the token check and
    the body's arrival included), each message its share."""
    seconds = time.perf_counter() - request[ARRIVED]
    request.app[METRICS_KEY].observe_stage("http_in", seconds, messages)


def describe(exc: ValidationError) -> str:
    """A one-line summary of a validation error: the first problem and how many more."""
    first = exc.errors(include_url=False, include_input=False)[0]
    where = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]
    ).removeprefix(".")
    where = where or "body"
    more = exc.error_count() - 1
    return f"{where}: {first['msg']}" + (f" (and {more} more problems)" if more else "")


_INTERNAL = "internal error; see sidecar log"
_AIOHTTP_CODES: dict[int, tuple[ErrorCode, str]] = {
    404: (ErrorCode.NOT_FOUND, "no such route; see /v1/openapi.json"),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "this route does not take that method"),
    413: (ErrorCode.BODY_TOO_LARGE, "the body is larger than this sidecar accepts"),
}


def _unavailable(problem: Problem) -> web.Response:
    return error_response(
        ErrorCode.REDIS_UNAVAILABLE, f"{problem.message}; retry later", 503,
        {"Retry-After": "1"}, problem.reason.value,
    )  # fmt: skip


async def _receive_body(request: web.Request) -> None:
    """Read the whole body within ``BODY_TIMEOUT`` of the request's head (aiohttp keeps it for
    the handler); ``ApiError`` ``body_timeout`` when it does not arrive in time."""
    if request.content.is_eof():  # no body, or all of it is here already
        return
    seconds = request.app[BODY_TIMEOUT]
    reading = asyncio.ensure_future(request.read())
    await asyncio.wait({reading}, timeout=seconds)
    if not reading.done():
        reading.cancel()
        raise ApiError(
            ErrorCode.BODY_TIMEOUT,
            f"the request body did not arrive within {seconds:g} s (MAS_BODY_TIMEOUT_MS)",
        )
    reading.result()  # raises as the read did (e.g. the body is too large)


def _check_token(request: web.Request, route: str) -> None:
    """Raise ``unauthenticated_client`` unless the request presents the agent's token (or needs
    none: a probe, or a sidecar serving every caller)."""
    expected = request.app[API_TOKEN]
    if expected is None or route in OPEN_PATHS:
        return
    token = presented(request.headers.get("Authorization"))
    # compare_digest takes as long for any token of a given length, right or wrong.
    if token is None or not hmac.compare_digest(token.encode("utf-8", "replace"), expected):
        raise ApiError(
            ErrorCode.UNAUTHENTICATED_CLIENT,
            "this sidecar serves its own agent only: send Authorization: Bearer with the "
            "agent's token ($MAS_SIDECAR_TOKEN)",
            {"WWW-Authenticate": f'{SCHEME} realm="mas-sidecar"'},
        )


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse callers without the agent's token, answer every failure as an error document,
    and count and time every request."""
    started = request[ARRIVED] = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        _check_token(request, route)
        await _receive_body(request)
        response = await handler(request)
    except (ApiError, Refusal) as exc:
        error = ApiError.of(exc)
        response = error_response(
            error.code, error.message, error.status, error.headers, error.reason
        )
        if error.code is ErrorCode.BODY_TIMEOUT:
            response.force_close()  # the rest of the body is not waited for
    except web.HTTPException as exc:
        code, message = _AIOHTTP_CODES.get(exc.status, (ErrorCode.INVALID_REQUEST, exc.reason))
        response = error_response(code, message, exc.status)
    except REDIS_ERRORS as exc:
        log.warning("redis unavailable while serving %s: %s", route, exc)
        response = _unavailable(
            problem_of(exc) or Problem(Reason.REDIS_UNREACHABLE, f"Redis cannot be reached: {exc}")
        )
    except redis.exceptions.ResponseError as exc:
        problem = problem_of(exc)
        if problem is None:  # no sign of a lost or unprovisioned server: a bug
            log.exception("internal error while serving %s %s", request.method, route)
            response = error_response(ErrorCode.INTERNAL_ERROR, _INTERNAL, 500)
        else:  # a new or restarted server, not (yet) provisioned again
            log.warning("redis unavailable while serving %s: %s", route, exc)
            response = _unavailable(problem)
    except Exception:
        log.exception("internal error while serving %s %s", request.method, route)
        response = error_response(ErrorCode.INTERNAL_ERROR, _INTERNAL, 500)
    metrics = request.app[METRICS_KEY]
    metrics.http_requests.labels(route, request.method, str(response.status)).inc()
    metrics.http_duration.labels(route).observe(time.perf_counter() - started)
    return response
