"""A tiny OTLP/HTTP trace receiver on loopback, for tests: it decodes each
``ExportTraceServiceRequest`` (protobuf) posted to ``/v1/traces`` into :class:`ReceivedSpan`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from mas_cli.local.redis_server import free_port


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    text: str = ""  # everything the span holds (attributes, events, status), as text


@dataclass
class Receiver:
    endpoint: str
    spans: list[ReceivedSpan]

    def named(self, service: str, name: str) -> ReceivedSpan:
        """The one span ``name`` of ``service``."""
        found = [s for s in self.spans if (s.service, s.name) == (service, name)]
        assert len(found) == 1, f"{len(found)} spans {name!r} of {service}"
        return found[0]


def _decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            spans += [
                ReceivedSpan(
                    attributes.get("service.name", ""),
                    span.name,
                    span.trace_id.hex(),
                    span.span_id.hex(),
                    span.parent_span_id.hex(),
                    str(span),
                )
                for span in scope_spans.spans
            ]
    return spans


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[Receiver]:
    """A receiver at ``http://127.0.0.1:<free port>`` (its ``endpoint``) until the block ends."""
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}", [])

    async def traces(request: web.Request) -> web.Response:
        receiver.spans += _decode(await request.read())
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield receiver
    finally:
        await runner.cleanup()
