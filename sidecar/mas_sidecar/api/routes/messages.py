"""``POST /v1/messages`` (fire and forget), ``POST /v1/messages/batch`` (many at once, one
result each) and ``POST /v1/requests`` (wait for the reply).

The W3C trace context headers of a request (``traceparent``, ``tracestate``) go into the
envelope. With tracing on (:mod:`mas_core.telemetry.tracing`) each request is a span under that
context — ``send``/``request`` with ``gateway checks``, ``redis write`` and ``reply wait``
children — and the envelope carries the span's own context instead, so the receiver's spans
are its children.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from aiohttp import web

from mas_core.envelope import Envelope
from mas_core.error_codes import HTTP_STATUS, ErrorCode
from mas_core.telemetry.tracing import Span, message_attributes
from mas_sidecar.api.documents import reply_document
from mas_sidecar.api.errors import ApiError
from mas_sidecar.api.http import (
    REMOTES,
    body_taken,
    components,
    json_response,
    read_body,
    trace_headers,
)
from mas_sidecar.api.models import SendBatch, SendMessage, SendRequest
from mas_sidecar.api.responses import (
    Accepted,
    BatchItemAccepted,
    BatchItemRefused,
    BatchResult,
    BatchResults,
)
from mas_sidecar.components import Components
from mas_sidecar.errors import Refusal
from mas_sidecar.streams.errors import REDIS_ERRORS
from mas_sidecar.streams.outbox import build_envelope

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
_BATCH_NESTING = 2  # a batch holds each message two levels down: {"messages": [{...}]}
ADMIT_SLICE = 32  # batch items checked between turns of the event loop


async def _admit(
    parts: Components, body: SendMessage, trace: Mapping[str, str]
) -> tuple[Envelope, asyncio.Future[Any]]:
    """Resolve and check one message (every gateway check) and queue its write. An external
    agent answers requests only: a message to it (which nothing would read) is refused."""
    target = await parts.outbox.resolve(body.to)
    entry = await parts.registry.lookup(target)
    if entry is not None and entry.external is not None:
        raise ApiError(
            ErrorCode.INVALID_REQUEST,
            f"{target} is an external A2A agent: it answers requests (POST /v1/requests) only",
        )
    envelope = build_envelope(
        sender=parts.config.agent_id,
        target=target,
        type=body.type,
        payload=body.payload,
        correlation_id=body.correlation_id,
        ttl_ms=body.ttl_ms,
        trace=trace,
    )
    with parts.tracer.span("gateway checks", attributes={"messaging.message.id": envelope.id}):
        return await parts.outbox.admit(envelope)


@routes.post("/v1/messages")
async def send_message(request: web.Request) -> web.Response:
    body = await read_body(request, SendMessage)
    body_taken(request)
    parts = components(request)
    trace = trace_headers(request)
    with parts.tracer.span("send", parent=trace, kind="server") as span:
        envelope, done = await _admit(parts, body, span.headers or trace)
        span.update(message_attributes(envelope))
        with parts.tracer.span("redis write"):
            await done
    return json_response(Accepted(id=envelope.id), status=202)


def _error_result(code: ErrorCode, message: str) -> BatchItemRefused:
    return {"status": HTTP_STATUS[code], "error": {"code": code, "message": message}}


def _failure(exc: Exception) -> BatchItemRefused:
    """A batch item's result for what stopped it: what a single send would have answered
    (``Retry-After`` as the error's ``retry_after``, in seconds)."""
    if isinstance(exc, ApiError | Refusal):
        error = ApiError.of(exc)
        result = _error_result(error.code, error.message)
        if "Retry-After" in error.headers:
            result["error"]["retry_after"] = int(error.headers["Retry-After"])
        return result
    if isinstance(exc, REDIS_ERRORS):
        log.warning("redis unavailable while sending a batch item: %s", exc)
        return _error_result(ErrorCode.REDIS_UNAVAILABLE, "Redis cannot be reached; retry later")
    log.error("internal error while sending a batch item", exc_info=exc)
    return _error_result(ErrorCode.INTERNAL_ERROR, "internal error; see sidecar log")


async def _send_all(
    parts: Components, items: Sequence[SendMessage], trace: Mapping[str, str]
) -> list[BatchResult]:
    """Admit the items in order, each through every check, then await their writes: the
    admitted ones share the writer's pipelines. Every ``ADMIT_SLICE`` items the event loop gets
    a turn, so a large batch neither stalls other requests nor waits to be written whole."""
    results: list[BatchResult | None] = [None] * len(items)
    admitted: list[tuple[int, str, asyncio.Future[Any]]] = []
    for index, item in enumerate(items):
        if index and not index % ADMIT_SLICE:
            await asyncio.sleep(0)
        try:
            envelope, done = await _admit(parts, item, trace)
        except Exception as exc:
            results[index] = _failure(exc)
        else:
            admitted.append((index, envelope.id, done))
    for index, message_id, done in admitted:
        try:
            await done
        except Exception as exc:
            results[index] = _failure(exc)
        else:
            results[index] = BatchItemAccepted(status=202, id=message_id)
    return cast(list[BatchResult], results)  # every item's result is in place now


@routes.post("/v1/messages/batch")
async def send_batch(request: web.Request) -> web.Response:
    """Send every message of the batch through the single-send checks, in order; one result
    per message, in request order."""
    body = await read_body(request, SendBatch, extra_depth=_BATCH_NESTING)
    body_taken(request, len(body.messages))
    # Shielded: once items are under way, a client that goes away cannot cut the batch short,
    # so every accepted item is accounted for (and written) even if nobody reads the answer.
    parts = components(request)
    trace = trace_headers(request)
    with parts.tracer.span("send batch", parent=trace, kind="server") as span:
        results = await asyncio.shield(_send_all(parts, body.messages, span.headers or trace))
    return json_response(BatchResults(results=results))


@routes.post("/v1/requests")
async def send_request(request: web.Request) -> web.Response:
    body = await read_body(request, SendRequest)
    body_taken(request)
    parts = components(request)
    trace = trace_headers(request)
    with parts.tracer.span("request", parent=trace, kind="server") as span:
        reply = await _request(parts, request.app[REMOTES], body, span.headers or trace, span)
    return json_response(reply_document(reply))


async def _request(
    parts: Components,
    remotes_slot: dict[str, Any],
    body: SendRequest,
    trace: Mapping[str, str],
    span: Span,
) -> Envelope:
    """Send the request (carrying ``trace``) and wait for its reply; ``span`` learns about the
    request once it passed the checks. To an external agent, the outbound A2A client made in
    ``remotes_slot`` (the app's) asks it."""
    target = await parts.outbox.resolve(body.to)
    envelope = build_envelope(
        sender=parts.config.agent_id,
        target=target,
        type=body.type,
        payload=body.payload,
        reply_to=parts.config.replica,
        ttl_ms=body.timeout_ms,  # nobody waits for an answer after that: dead-letter it as expired
        trace=trace,
    )
    entry = await parts.registry.lookup(target)
    if entry is not None and entry.external is not None:
        return await _ask_external(parts, remotes_slot, envelope, entry.external, body.timeout_ms)
    reply = parts.replies.expect(envelope.id, target)
    try:
        await parts.replies.prepare(target)
        with parts.tracer.span("gateway checks", attributes={"messaging.message.id": envelope.id}):
            _, done = await parts.outbox.admit(envelope, "request")
        span.update(message_attributes(envelope))
        with parts.tracer.span("redis write"):
            await done
        written = time.perf_counter()
        with parts.tracer.span("reply wait"):
            await asyncio.wait({reply}, timeout=body.timeout_ms / 1000)
    finally:
        parts.replies.forget(envelope.id)
    if not reply.done():
        raise ApiError(
            ErrorCode.REQUEST_TIMEOUT, f"no reply from {target} within {body.timeout_ms} ms"
        )
    parts.metrics.observe_stage("reply_wait", time.perf_counter() - written)
    return reply.result()


async def _ask_external(
    parts: Components, remotes_slot: dict[str, Any], envelope: Envelope, url: str, timeout_ms: int
) -> Envelope:
    """A request to an external A2A agent at ``url``: the outbound client (imported only now)
    runs the checks, calls it and checks its answer."""
    from mas_sidecar.api.a2a.remote import remotes  # noqa: PLC0415 - only for external targets

    return await remotes(remotes_slot, parts).request(envelope, url, timeout_ms)
