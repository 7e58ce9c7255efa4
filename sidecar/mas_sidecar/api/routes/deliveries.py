"""``GET /v1/deliveries`` (server-sent events) and the agent's answers to each delivery.

Each delivery event carries the message and ``lease_ms``, this sidecar's lease
(:func:`mas_sidecar.api.documents.delivery_document`): the SDK renews a running handler's lease at
a fraction of it. An ack may say how long the agent's handler took (``handler_ms``), which
``mas_handler_seconds`` observes for the deliveries it settles.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from mas_core.envelope import Envelope
from mas_core.error_codes import ErrorCode
from mas_core.telemetry.tracing import message_attributes
from mas_sidecar.api.documents import delivery_document, sse_event
from mas_sidecar.api.errors import ApiError
from mas_sidecar.api.http import (
    body_taken,
    components,
    json_response,
    read_body,
    trace_headers,
)
from mas_sidecar.api.models import Ack, AckBatch, ExtendBatch, Nack, Progress, Reject, Reply
from mas_sidecar.api.responses import Accepted, AckResult, ExtendResult
from mas_sidecar.api.server import connection_closed
from mas_sidecar.metrics import Metrics
from mas_sidecar.streams.inbox import Lease

routes = web.RouteTableDef()
KEEPALIVE_SECONDS = 15.0
BURST = 64  # deliveries written to a subscriber at once, at most
STOPPING = web.AppKey("stopping", asyncio.Event)
FIRST = asyncio.FIRST_COMPLETED


@routes.get("/v1/deliveries")
async def deliveries(request: web.Request) -> web.StreamResponse:
    inbox = components(request).inbox
    stopping = request.app[STOPPING]
    # Subscribed before the answer starts: over the cap, the answer is the error document.
    with inbox.subscription():
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        stopped = asyncio.ensure_future(stopping.wait())
        # A client that went away is noticed at once (the write below fails), not at the next
        # keepalive: its place under MAS_MAX_SUBSCRIBERS is free again right away.
        gone = connection_closed(request)
        while not (stopping.is_set() or gone.done()):
            ready = inbox.delivery_ready()
            if not ready.done():
                awaited: set[asyncio.Future[Any]] = {ready, stopped, gone}
                await asyncio.wait(awaited, timeout=KEEPALIVE_SECONDS, return_when=FIRST)
                ready.cancel()
            if stopping.is_set() or gone.done():
                break
            # A burst that is ready goes out in one write (one syscall, one read for the agent).
            batch = inbox.ready_deliveries(BURST)
            if not batch and not ready.cancelled():
                continue  # another subscriber took them: no keepalive due
            lease_ms = inbox.lease_ms
            chunk = (
                b"".join(sse_event(e, orjson.dumps(delivery_document(e, lease_ms))) for e in batch)
                or b": keepalive\n\n"
            )
            leased_at = inbox.leased_at(batch)
            try:
                await response.write(chunk)
            except ConnectionError:
                for taken in batch:
                    inbox.hand_back(taken)
                break
            inbox.written(leased_at)
        stopped.cancel()
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


@routes.post("/v1/deliveries/ack")
async def ack_many(request: web.Request) -> web.Response:
    """Ack many deliveries in one request (one Redis MULTI); unknown ids are reported, not
    refused."""
    body = await read_body(request, AckBatch)
    parts = components(request)
    acked, unknown = await parts.inbox.ack_many(body.ids)
    if body.handler_ms is not None:
        times = dict(zip(body.ids, body.handler_ms, strict=True))
        for delivery_id in acked:
            _handler_took(parts.metrics, times[delivery_id])
    return json_response(AckResult(acked=acked, unknown=unknown))


@routes.post("/v1/deliveries/extend")
async def extend_many(request: web.Request) -> web.Response:
    """Start the lease of many deliveries again in one request (one Redis round trip); ids not
    leased here any more are reported, not refused."""
    body = await read_body(request, ExtendBatch)
    extended, unknown = await components(request).inbox.extend_many(body.ids)
    return json_response(ExtendResult(extended=extended, unknown=unknown))


@routes.post("/v1/deliveries/{id}/ack")
async def ack(request: web.Request) -> web.Response:
    body = await read_body(request, Ack, optional=True)
    parts = components(request)
    await parts.inbox.ack(request.match_info["id"])
    _handler_took(parts.metrics, body.handler_ms)
    return web.Response(status=204)


def _handler_took(metrics: Metrics, handler_ms: float | None) -> None:
    """Observe the handler time an ack reported, if it did."""
    if handler_ms is not None:
        metrics.handler_seconds.observe(handler_ms / 1000)


@routes.post("/v1/deliveries/{id}/nack")
async def nack(request: web.Request) -> web.Response:
    body = await read_body(request, Nack, optional=True)
    await components(request).inbox.nack(request.match_info["id"], body.delay_ms)
    return web.Response(status=204)


@routes.post("/v1/deliveries/{id}/extend")
async def extend(request: web.Request) -> web.Response:
    await components(request).inbox.extend(request.match_info["id"])
    return web.Response(status=204)


@routes.post("/v1/deliveries/{id}/reject")
async def reject(request: web.Request) -> web.Response:
    body = await read_body(request, Reject)
    await components(request).inbox.reject(request.match_info["id"], body.reason)
    return web.Response(status=204)


@routes.post("/v1/deliveries/{id}/reply")
async def reply(request: web.Request) -> web.Response:
    body = await read_body(request, Reply)
    body_taken(request)
    parts = components(request)
    lease = parts.inbox.lease(request.match_info["id"])
    _not_answered(lease, "a request takes one reply")
    envelope = await _traced(
        request, lease, "reply",
        lambda trace: parts.outbox.reply(lease.envelope, body.type, body.payload, trace=trace),
    )  # fmt: skip
    lease.replied = True
    return json_response(Accepted(id=envelope.id), status=202)


@routes.post("/v1/deliveries/{id}/progress")
async def progress(request: web.Request) -> web.Response:
    """Report progress on the request being handled: only a synchronous request (one with a
    replica waiting for its reply) not answered yet takes progress reports."""
    body = await read_body(request, Progress)
    body_taken(request)
    parts = components(request)
    lease = parts.inbox.lease(request.match_info["id"])
    if lease.envelope.reply_to is None:
        raise ApiError(
            ErrorCode.NOT_A_REQUEST,
            f"message {lease.envelope.id} is not a request waiting for a reply: "
            "nobody to report progress to",
        )
    _not_answered(lease, "progress comes before the reply")
    envelope = await _traced(
        request, lease, "progress",
        lambda trace: parts.outbox.progress(lease.envelope, body.text, body.data, trace=trace),
    )  # fmt: skip
    return json_response(Accepted(id=envelope.id), status=202)


def _not_answered(lease: Lease, why: str) -> None:
    """``already_replied`` for a synchronous request that was answered already."""
    if lease.replied and lease.envelope.reply_to is not None:
        raise ApiError(
            ErrorCode.ALREADY_REPLIED, f"request {lease.envelope.id} was answered already; {why}"
        )


async def _traced(
    request: web.Request,
    lease: Lease,
    name: str,
    send: Callable[[Mapping[str, str] | None], Awaitable[Envelope]],
) -> Envelope:
    """``send(trace)`` in a span ``name`` that continues the caller's trace, or the
    delivery's; the envelope sent."""
    parts = components(request)
    parent = trace_headers(request) or lease.trace
    with parts.tracer.span(name, parent=parent, kind="server") as span:
        envelope = await send(span.headers or None)
        span.update(message_attributes(envelope))
    return envelope
