"""``/v1/dead-letters``: list, replay and delete the agent's dead letters."""

from __future__ import annotations

from aiohttp import web

from mas_core.error_codes import ErrorCode
from mas_sidecar.api.documents import dead_letter_document
from mas_sidecar.api.errors import ApiError
from mas_sidecar.api.http import components, json_response
from mas_sidecar.api.responses import Accepted, DeadLetters

routes = web.RouteTableDef()
MAX_LIMIT = 1000


@routes.get("/v1/dead-letters")
async def list_dead_letters(request: web.Request) -> web.Response:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"limit must be an integer in 1..{MAX_LIMIT}")
    entries = await components(request).dead_letters.list(int(raw))
    return json_response(DeadLetters(dead_letters=[dead_letter_document(e) for e in entries]))


@routes.post("/v1/dead-letters/{id}/replay")
async def replay(request: web.Request) -> web.Response:
    message_id = await components(request).dead_letters.replay(request.match_info["id"])
    return json_response(Accepted(id=message_id), status=202)


@routes.delete("/v1/dead-letters/{id}")
async def delete(request: web.Request) -> web.Response:
    await components(request).dead_letters.delete(request.match_info["id"])
    return web.Response(status=204)
