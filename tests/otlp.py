"""A tiny OTLP/HTTP trace receiver on loopback, for tests: it decodes each
``ExportTraceServiceRequest`` (protobuf) posted to ``/v1/traces`` into :class:`ReceivedSpan`.

It serves from a thread of its own, so async tests (whose event loop may be busy) and the
synchronous e2e tests (``from tests.otlp import otlp_receiver``) use it alike.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


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
    endpoint: str  # http://127.0.0.1:<port>; spans are posted to <endpoint>/v1/traces
    spans: list[ReceivedSpan] = field(default_factory=list)


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one export request."""
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


@contextmanager
def otlp_receiver(host: str = "127.0.0.1") -> Iterator[Receiver]:
    """A receiver on a free port of ``host`` until the block ends."""
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            receiver.spans.extend(decode(body))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests look at what arrived."""

    server = ThreadingHTTPServer((host, 0), Handler)
    receiver = Receiver(f"http://{host}:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
