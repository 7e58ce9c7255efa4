"""The A2A listener of an exposed agent: its card and the JSON-RPC binding, on a port of its own.

With ``spec.a2a.expose`` the sidecar listens on ``MAS_A2A_HOST`` (the pod's address; loopback
under ``mas up``) and ``spec.a2a.port``, beside its loopback API, and serves:

* ``GET /.well-known/agent-card.json``: the agent card (:mod:`mas_core.a2a_card`), to anyone;
* ``POST /``: JSON-RPC calls (:mod:`mas_sidecar.api.a2a.protocol`), each with the bearer API key
  of a named client (:mod:`mas_sidecar.api.a2a.clients`). A call without a valid key is
  answered ``401`` with ``WWW-Authenticate: Bearer`` before its body is read. The rest is the
  four steps of every route: parse, check (:mod:`mas_sidecar.api.a2a.calls`: the gateway
  checks), write, answer — a ``Message`` or a ``Task``, or a server-sent event stream for
  ``SendStreamingMessage`` and ``SubscribeToTask`` (the task, then a status update for each
  progress report of the handler, then the final one).

The listener takes at most ``MAS_A2A_MAX_CONNECTIONS`` connections (default 256) at once, a cap
of its own (:func:`mas_sidecar.api.server.serving`): one more is answered ``503`` with a
JSON-RPC error (``too_many_connections``) and closed, and the agent's loopback API, capped
apart, keeps answering. The listener is built only when the agent is exposed, and this package
is imported only then (:mod:`mas_sidecar.api.app`), so a sidecar that serves no A2A pays
nothing for it. Why the binding is written here over aiohttp, not with the ``a2a-sdk`` server:
the SDK's server runs on Starlette with protobuf types (a second web framework and several
megabytes in every exposed sidecar, against its memory budget), while the binding is five
methods on the sidecar's own HTTP stack, its limits and its error handling; the SDK's client
proves the conformance in the tests.

Used by :mod:`mas_sidecar.api.app` (:func:`listener`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from mas_core.a2a_card import CARD_PATH, external_principal
from mas_core.error_codes import ErrorCode
from mas_sidecar.api.a2a.calls import Calls
from mas_sidecar.api.a2a.clients import ClientKeys
from mas_sidecar.api.a2a.protocol import (
    CANCEL,
    GET,
    INTERNAL,
    PARSE_ERROR,
    REFUSED,
    SEND,
    SUBSCRIBE,
    TERMINAL,
    UNSUPPORTED_OPERATION,
    VERSION_HEADER,
    Call,
    RpcError,
    error_document,
    inbound_message,
    message_result,
    parse_call,
    request_id,
    result_document,
    status_event,
    task_id_param,
    task_result,
)
from mas_sidecar.api.http import error_response, json_response, trace_headers
from mas_sidecar.api.routes.agents import own_card
from mas_sidecar.api.server import connection_closed, serving, too_many_connections
from mas_sidecar.components import Components

log = logging.getLogger(__name__)
PARTS = web.AppKey("parts", Components)
CALLS = web.AppKey("calls", Calls)
KEYS = web.AppKey("keys", ClientKeys)
MAX_CONNECTIONS_SETTING = "MAS_A2A_MAX_CONNECTIONS"


async def card(request: web.Request) -> web.Response:
    return json_response(own_card(request.app[PARTS]))


async def rpc(request: web.Request) -> web.StreamResponse:
    client = request.app[KEYS].authenticate(request.headers.get("Authorization"))
    if client is None:
        log.info("A2A call refused: no valid API key")
        return error_response(
            ErrorCode.UNAUTHENTICATED_CLIENT,
            "present a client's API key: Authorization: Bearer <key>",
            401,
            headers={"WWW-Authenticate": 'Bearer realm="a2a"'},
        )
    try:
        document = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return json_response(
            error_document(None, RpcError(PARSE_ERROR, "the body is not JSON", "invalid_json"))
        )
    try:
        call = parse_call(document, request.headers.get(VERSION_HEADER))
        if call.method in (SEND, GET, CANCEL):
            result = await _answer(request, call, external_principal(client))
            return json_response(result_document(call.id, result))
        return await _stream(request, call, external_principal(client))
    except RpcError as error:
        return json_response(error_document(request_id(document), error))


async def _answer(request: web.Request, call: Call, principal: str) -> Any:
    calls = request.app[CALLS]
    if call.method == GET:
        task = calls.task(principal, task_id_param(call.params))
        return task_result(task.document(), call.dialect, wrapped=False)
    if call.method == CANCEL:
        task = await calls.cancel(principal, task_id_param(call.params), trace_headers(request))
        return task_result(task.document(), call.dialect, wrapped=False)
    inbound = inbound_message(call.params)
    configuration = call.params.get("configuration") or {}
    task = await calls.start(principal, inbound, trace_headers(request))
    immediate = isinstance(configuration, dict) and (
        configuration.get("returnImmediately") is True or configuration.get("blocking") is False
    )
    if not immediate:
        await calls.answer_within_call(task)
    if task.state == "TASK_STATE_COMPLETED" and task.message is not None:
        return message_result(task.message, call.dialect, wrapped=True)
    return task_result(task.document(), call.dialect, wrapped=True)


async def _stream(request: web.Request, call: Call, principal: str) -> web.StreamResponse:
    """SendStreamingMessage (a new task) or SubscribeToTask (one still working): the task as the
    first event, a status update for each change, the final status as the last."""
    calls = request.app[CALLS]
    if call.method == SUBSCRIBE:
        task = calls.task(principal, task_id_param(call.params))
        if task.finished:
            raise RpcError(
                UNSUPPORTED_OPERATION, f"task {task.id} has finished: nothing to follow",
                "unsupported_operation",
            )  # fmt: skip
    else:
        task = await calls.start(principal, inbound_message(call.params), trace_headers(request))
    with task.watch() as changes:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        async def event(result: Any) -> None:
            document = result_document(call.id, result)
            await response.write(b"data: " + orjson.dumps(document) + b"\n\n")

        await event(task_result(task.document(), call.dialect, wrapped=True))
        gone = connection_closed(request)
        while not gone.done():
            # A task that finished before the stream began has no change left to wait for.
            if task.finished and changes.empty():
                changed = task.document()
            else:
                # A client that went away stops the stream at once, not at the next change.
                following = asyncio.ensure_future(changes.get())
                either: set[asyncio.Future[Any]] = {following, gone}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    break
                changed = following.result()
            await event(status_event(changed, call.dialect))
            if changed["status"]["state"] in TERMINAL:
                break
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """No failure escapes as a bare 500: a JSON-RPC internal error, logged."""
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except web.HTTPException:
        raise
    except Exception:
        log.exception("A2A call failed")
        error = RpcError(INTERNAL, "internal error; see the sidecar log", "internal_error")
        return json_response(error_document(None, error))


def build_a2a_app(parts: Components) -> web.Application:
    """The A2A listener's application for the agent of ``parts``."""
    config = parts.config
    assert config.a2a is not None
    app = web.Application(middlewares=[_errors], client_max_size=config.max_body_bytes)
    app[PARTS] = parts
    app[CALLS] = Calls(parts)
    app[KEYS] = ClientKeys.load(
        config.a2a_clients_dir, [client.name for client in config.a2a.clients]
    )
    app.router.add_get(CARD_PATH, card)
    app.router.add_post("/", rpc)
    return app


def refusal_document(limit: int) -> bytes:
    """What a connection over ``MAS_A2A_MAX_CONNECTIONS`` is answered (with ``503``): a
    JSON-RPC error naming mas's code ``too_many_connections``."""
    message = too_many_connections(limit, MAX_CONNECTIONS_SETTING)
    error = RpcError(REFUSED, message, ErrorCode.TOO_MANY_CONNECTIONS.value)
    return orjson.dumps(error_document(None, error))


async def listener(parts: Components) -> AsyncIterator[None]:
    """Serve the A2A listener while the sidecar runs: at most ``MAS_A2A_MAX_CONNECTIONS``
    connections (streams included) at once, a cap of its own beside the API's."""
    config = parts.config
    assert config.a2a is not None
    limit = config.a2a_max_connections
    async with serving(
        build_a2a_app(parts), config, (config.a2a_host, config.a2a.port), limit=limit,
        refused=parts.metrics.a2a_connections_refused, setting=MAX_CONNECTIONS_SETTING,
        body=refusal_document(limit),
    ):  # fmt: skip
        log.info("A2A listener on %s (card at %s)", config.a2a_endpoint, CARD_PATH)
        yield
