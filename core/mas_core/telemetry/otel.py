"""Spans over OpenTelemetry: what :func:`mas_core.telemetry.tracing.from_environment` returns
when tracing is configured.

Imported only then (it imports the ``opentelemetry`` packages, the ``otel`` extra). Spans are
batched and exported over OTLP/HTTP (protobuf) by OpenTelemetry's own exporter, which reads its
endpoint, headers and timeouts from the ``OTEL_EXPORTER_OTLP_*`` variables; the provider also
becomes OpenTelemetry's global one when none is set, so spans an agent's own code makes under a
handler land in the same trace and the same export. A span that an exception ends is marked
failed with the error's code (or class) only, never its message, which may quote refused data.
Tests build an :class:`OtelTracer` over a provider of their own (an in-memory exporter).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mas_core.telemetry import tracing

_KINDS: dict[tracing.Kind, trace.SpanKind] = {
    "internal": trace.SpanKind.INTERNAL,
    "server": trace.SpanKind.SERVER,
    "client": trace.SpanKind.CLIENT,
    "producer": trace.SpanKind.PRODUCER,
    "consumer": trace.SpanKind.CONSUMER,
}
_PROPAGATOR = TraceContextTextMapPropagator()


def _headers(span: trace.Span) -> dict[str, str]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


class OtelSpan(tracing.Span):
    """A recording OpenTelemetry span."""

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    @property
    def headers(self) -> dict[str, str]:
        return _headers(self._span)

    def set(self, name: str, value: str | int | bool) -> None:
        self._span.set_attribute(name, value)


class OtelTracer(tracing.Tracer):
    """Spans of one OpenTelemetry tracer provider."""

    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("mas")

    @classmethod
    def exporting(cls, exporter: str, service: str, attributes: tracing.Attributes) -> OtelTracer:
        """A tracer batching its spans to ``exporter`` (``otlp`` or ``console``)."""
        detected = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            detected = detected.merge(Resource({SERVICE_NAME: service}))
        provider = TracerProvider(resource=Resource(dict(attributes)).merge(detected))
        provider.add_span_processor(BatchSpanProcessor(_exporter(exporter)))
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
        return cls(provider)

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        parent: Mapping[str, str] | None = None,
        kind: tracing.Kind = "internal",
        attributes: tracing.Attributes | None = None,
    ) -> Iterator[tracing.Span]:
        context = None if parent is None else _PROPAGATOR.extract(dict(parent))
        with self._tracer.start_as_current_span(
            name, context=context, kind=_KINDS[kind], attributes=attributes,
            record_exception=False, set_status_on_exception=False,
        ) as span:  # fmt: skip
            try:
                yield OtelSpan(span)
            except BaseException as exc:
                # The error's code or class only: a refusal's words may quote what it refused.
                span.set_status(trace.StatusCode.ERROR)
                span.set_attribute("error.type", str(getattr(exc, "code", type(exc).__name__)))
                raise

    def record(
        self,
        name: str,
        *,
        parent: Mapping[str, str] | None,
        start_ns: int,
        end_ns: int,
        kind: tracing.Kind = "internal",
        attributes: tracing.Attributes | None = None,
    ) -> dict[str, str]:
        span = self._tracer.start_span(
            name,
            context=_PROPAGATOR.extract(dict(parent or {})),
            kind=_KINDS[kind],
            attributes=attributes,
            start_time=start_ns,
        )
        span.end(end_time=max(start_ns, end_ns))
        return _headers(span)

    def shutdown(self) -> None:
        self._provider.shutdown()


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return OTLPSpanExporter()
