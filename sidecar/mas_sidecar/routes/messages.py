"""``POST /v1/messages`` (fire and forget), ``POST /v1/messages/batch`` (many at once, one
result each) and ``POST /v1/requests`` (wait for the reply)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import redis.exceptions
from aiohttp import web

from mas.errors import HTTP_STATUS, ErrorCode
from mas_sidecar.components import Components, components
from mas_sidecar.documents import message_document
from mas_sidecar.errors import ApiError
from mas_sidecar.http import json_response, read_body
from mas_sidecar.models import SendBatch, SendMessage, SendRequest
from mas_sidecar.outbox import build_envelope

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
_TRACE_HEADERS = ("traceparent", "tracestate")
_BATCH_NESTING = 2  # a batch holds each message two levels down: {"messages": [{...}]}


def _trace(request: web.Request) -> dict[str, str]:
    return {name: request.headers[name][:512] for name in _TRACE_HEADERS if name in request.headers}


async def _send(parts: Components, body: SendMessage, trace: Mapping[str, str]) -> str:
    """Resolve, check and write one message (every gateway check); its id, or ApiError."""
    target = await parts.outbox.resolve(body.to)
    envelope = build_envelope(
        sender=parts.config.agent_id,
        target=target,
        type=body.type,
        payload=body.payload,
        correlation_id=body.correlation_id,
        ttl_ms=body.ttl_ms,
        trace=trace,
    )
    await parts.outbox.send(envelope)
    return envelope.id


@routes.post("/v1/messages")
async def send_message(request: web.Request) -> web.Response:
    body = await read_body(request, SendMessage)
    message_id = await _send(components(request), body, _trace(request))
    return json_response({"id": message_id}, status=202)


def _error_result(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"status": HTTP_STATUS[code], "error": {"code": code.value, "message": message}}


async def _send_item(parts: Components, body: SendMessage, trace: Mapping[str, str]) -> Any:
    """One batch item's result: what a single send would have answered, as a document."""
    try:
        async with parts.outbox.batch_slots:
            return {"status": 202, "id": await _send(parts, body, trace)}
    except ApiError as exc:
        return _error_result(exc.code, exc.message)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        log.warning("redis unavailable while sending a batch item: %s", exc)
        return _error_result(ErrorCode.REDIS_UNAVAILABLE, "Redis cannot be reached; retry later")
    except Exception:
        log.exception("internal error while sending a batch item")
        return _error_result(ErrorCode.INTERNAL_ERROR, "internal error; see sidecar log")


@routes.post("/v1/messages/batch")
async def send_batch(request: web.Request) -> web.Response:
    """Send every message of the batch through the single-send path, concurrently (at most
    ``BATCH_ITEMS_IN_FLIGHT`` at once; the writer shares their Redis round trips); one result
    per message, in request order."""
    body = await read_body(request, SendBatch, extra_depth=_BATCH_NESTING)
    parts, trace = components(request), _trace(request)
    # Shielded: once items are under way, a client that goes away cannot cut the batch short,
    # so every accepted item is accounted for (and written) even if nobody reads the answer.
    results = await asyncio.shield(
        asyncio.gather(*(_send_item(parts, item, trace) for item in body.messages))
    )
    return json_response({"results": results})


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
