"""``GET``, ``PUT`` and ``PATCH /v1/state``: the agent's persisted state, with revisions; and
``GET``/``PUT /v1/state/completed/{id}``: the record of messages it handled (for idempotent
handlers, see :mod:`mas_sidecar.streams.state_store`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mas_core.error_codes import ErrorCode
from mas_sidecar.api.errors import ApiError
from mas_sidecar.api.http import components, json_response, read_body
from mas_sidecar.api.models import Completed, StateBody
from mas_sidecar.api.responses import CompletedRecord, State

routes = web.RouteTableDef()
MAX_MESSAGE_ID = 128


def expected_revision(request: web.Request) -> int | None:
    """The revision named by ``If-Match`` (``N`` or ``"N"``; ``*`` or absent: any)."""
    raw = request.headers.get("If-Match", "").strip()
    if raw in ("", "*"):
        return None
    value = raw.removeprefix("W/").strip('"')
    if not value.isdigit() or len(value) > 18:
        raise ApiError(ErrorCode.INVALID_REVISION, "If-Match must be a revision number, e.g. 3")
    return int(value)


def _answer(state: dict[str, Any], revision: int) -> web.Response:
    return json_response(State(state=state, revision=revision), headers={"ETag": f'"{revision}"'})


@routes.get("/v1/state")
async def get_state(request: web.Request) -> web.Response:
    state, revision = await components(request).state.read()
    return _answer(state, revision)


@routes.put("/v1/state")
async def put_state(request: web.Request) -> web.Response:
    expected = expected_revision(request)
    body = await read_body(request, StateBody)
    revision = await components(request).state.replace(body.state, expected)
    return _answer(body.state, revision)


@routes.patch("/v1/state")
async def patch_state(request: web.Request) -> web.Response:
    expected = expected_revision(request)
    body = await read_body(request, StateBody)
    state, revision = await components(request).state.patch(body.state, expected)
    return _answer(state, revision)


def _message_id(request: web.Request) -> str:
    message_id = request.match_info["id"]
    if len(message_id) > MAX_MESSAGE_ID:
        raise ApiError(
            ErrorCode.INVALID_REQUEST, f"a message id has at most {MAX_MESSAGE_ID} characters"
        )
    return message_id


@routes.get("/v1/state/completed/{id}")
async def get_completed(request: web.Request) -> web.Response:
    message_id = _message_id(request)
    completed = await components(request).state.completed(message_id)
    return json_response(CompletedRecord(id=message_id, completed=completed))


@routes.put("/v1/state/completed/{id}")
async def put_completed(request: web.Request) -> web.Response:
    message_id = _message_id(request)
    body = await read_body(request, Completed)
    await components(request).state.complete(message_id, body.ttl_ms)
    return web.Response(status=204)
