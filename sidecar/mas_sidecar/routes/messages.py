"""``POST /v1/messages`` (fire and forget) and ``POST /v1/requests`` (wait for the reply)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from mas.errors import ErrorCode
from mas_sidecar.components import components
from mas_sidecar.documents import message_document
from mas_sidecar.errors import ApiError
from mas_sidecar.http import json_response, read_body
from mas_sidecar.models import SendMessage, SendRequest
from mas_sidecar.outbox import build_envelope

routes = web.RouteTableDef()
_TRACE_HEADERS = ("traceparent", "tracestate")


def _trace(request: web.Request) -> dict[str, str]:
    return {name: request.headers[name][:512] for name in _TRACE_HEADERS if name in request.headers}


@routes.post("/v1/messages")
async def send_message(request: web.Request) -> web.Response:
    body = await read_body(request, SendMessage)
    parts = components(request)
    target = await parts.outbox.resolve(body.to)
    envelope = build_envelope(
        sender=parts.config.agent_id,
        target=target,
        type=body.type,
        payload=body.payload,
        correlation_id=body.correlation_id,
        ttl_ms=body.ttl_ms,
        trace=_trace(request),
    )
    await parts.outbox.send(envelope)
    return json_response({"id": envelope.id}, status=202)


@routes.post("/v1/requests")
async def send_request(request: web.Request) -> web.Response:
    body = await read_body(request, SendRequest)
    parts = components(request)
    target = await parts.outbox.resolve(body.to)
    envelope = build_envelope(
        sender=parts.config.agent_id,
        target=target,
        type=body.type,
        payload=body.payload,
        reply_to=parts.config.replica,
        ttl_ms=body.timeout_ms,  # nobody waits for an answer after that: dead-letter it as expired
        trace=_trace(request),
    )
    reply = parts.replies.expect(envelope.id, target)
    try:
        await parts.outbox.send(envelope, "request")
        await asyncio.wait({reply}, timeout=body.timeout_ms / 1000)
    finally:
        parts.replies.forget(envelope.id)
    if not reply.done():
        raise ApiError(
            ErrorCode.REQUEST_TIMEOUT, f"no reply from {target} within {body.timeout_ms} ms"
        )
    document = message_document(reply.result())
    del document["attempt"]
    return json_response(document)
