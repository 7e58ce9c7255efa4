"""Spans around the message path, off and free unless the standard ``OTEL_*`` variables ask
for them.

:func:`from_environment` reads ``OTEL_SDK_DISABLED``, ``OTEL_TRACES_EXPORTER`` (``otlp``, the
default once an OTLP endpoint is set, or ``console``; ``none`` turns tracing off),
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` and
``OTEL_EXPORTER_OTLP_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` (only ``http/protobuf``).
With none of them set it returns :data:`NO_TRACER`, whose spans cost one call and record
nothing, and OpenTelemetry is never imported: a sidecar without tracing keeps its memory. With
tracing on it returns the :class:`~mas_core.telemetry.otel.OtelTracer` of the process (one
provider, one OTLP/HTTP exporter whose other settings — headers, timeouts, batching — come from
the usual ``OTEL_*`` variables, read by OpenTelemetry itself).

Trace context travels as W3C ``traceparent``/``tracestate`` headers: in requests to a sidecar
and in the envelope's ``trace`` field (:class:`mas_core.envelope.Envelope`). A span's
:attr:`Span.headers` is what to carry on so the next hop continues the same trace.

Used by the sidecar (send, receive, deliver, reply, ack), the SDK (send, request, process,
reply, ack) and :mod:`mas_core.telemetry.logs` (:func:`trace_id`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Mapping
from typing import Literal

from mas_core.envelope import Envelope

TRACE_HEADERS = ("traceparent", "tracestate")
Kind = Literal["internal", "server", "client", "producer", "consumer"]
Attributes = Mapping[str, str | int | bool]
EXPORTERS = ("otlp", "console")
PROTOCOL = "http/protobuf"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


class TracingConfigError(ValueError):
    """The ``OTEL_*`` variables ask for something mas cannot do; the message names it."""


def trace_id(trace: Mapping[str, str] | None) -> str | None:
    """The 32-hex-digit trace id of a W3C ``traceparent`` in ``trace``, or None."""
    match = _TRACEPARENT.match((trace or {}).get("traceparent", "").strip().lower())
    return match.group(1) if match and set(match.group(1)) != {"0"} else None


def message_attributes(envelope: Envelope) -> dict[str, str | int | bool]:
    """What a span says about a message: ids, parties, type and attempt, never its payload.
    Only for a message that passed the gateway checks (a refused type may hold what DLP
    refused it for)."""
    return {
        "messaging.system": "mas",
        "messaging.message.id": envelope.id,
        "messaging.destination.name": envelope.target,
        "mas.sender": envelope.sender,
        "mas.message.type": envelope.type,
        "mas.attempt": envelope.attempt,
    }


def exporter_from(env: Mapping[str, str]) -> str | None:
    """The span exporter the ``OTEL_*`` variables of ``env`` ask for (``otlp`` or ``console``),
    or None when tracing is off; :class:`TracingConfigError` for what mas cannot export with."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    endpoint = any(
        env.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    if not names:
        names = ["otlp"] if endpoint else []
    if not names or names == ["none"]:
        return None
    if len(names) > 1 or names[0] not in EXPORTERS:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={env.get('OTEL_TRACES_EXPORTER')!r}: mas exports spans with "
            f"one of {', '.join(EXPORTERS)} (or none)"
        )
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name, "").strip()
        if protocol:
            if protocol != PROTOCOL:
                raise TracingConfigError(
                    f"{name}={protocol!r}: mas exports spans over OTLP with {PROTOCOL} only"
                )
            break
    return names[0]


class Span:
    """A span being recorded; this one records nothing (tracing is off)."""

    @property
    def headers(self) -> dict[str, str]:
        """The W3C trace context headers that make the next hop this span's child."""
        return {}

    def set(self, name: str, value: str | int | bool) -> None:
        """Set the attribute ``name``."""

    def update(self, attributes: Attributes) -> None:
        """Set each of ``attributes``."""
        for name, value in attributes.items():
            self.set(name, value)


NO_SPAN = Span()


class _NoSpanContext(contextlib.AbstractContextManager[Span]):
    """What :meth:`Tracer.span` returns with tracing off: one shared object, no generator."""

    def __enter__(self) -> Span:
        return NO_SPAN

    def __exit__(self, *_: object) -> None:
        return None


_NO_SPAN_CONTEXT = _NoSpanContext()


class Tracer:
    """Makes spans; this one makes none (tracing is off): every method is a cheap no-op."""

    enabled = False

    def span(
        self,
        name: str,
        *,
        parent: Mapping[str, str] | None = None,
        kind: Kind = "internal",
        attributes: Attributes | None = None,
    ) -> contextlib.AbstractContextManager[Span]:
        """A span around the block, current inside it; its parent is the trace context in
        ``parent`` (a new trace when it holds none), or the current span when ``parent`` is
        None. An exception leaving the block marks the span failed."""
        return _NO_SPAN_CONTEXT

    def record(
        self,
        name: str,
        *,
        parent: Mapping[str, str] | None,
        start_ns: int,
        end_ns: int,
        kind: Kind = "internal",
        attributes: Attributes | None = None,
    ) -> dict[str, str]:
        """Record a span that already happened (from ``start_ns`` to ``end_ns``, nanoseconds
        since the epoch) under ``parent``; its trace context headers."""
        return {}

    def shutdown(self) -> None:
        """Export what is pending and stop."""


NO_TRACER = Tracer()
_tracer: Tracer | None = None


def from_environment(
    service: str, attributes: Attributes | None = None, env: Mapping[str, str] = os.environ
) -> Tracer:
    """The process's tracer: :data:`NO_TRACER` unless the ``OTEL_*`` variables turn tracing on.
    ``service`` is the default ``service.name`` (``OTEL_SERVICE_NAME`` wins); ``attributes``
    describe the process (resource attributes). The first call decides for the process."""
    global _tracer  # noqa: PLW0603 - one tracer provider per process, as OpenTelemetry has it
    if _tracer is None:
        _tracer = _start(exporter_from(env), service, attributes or {})
    return _tracer


def _start(exporter: str | None, service: str, attributes: Attributes) -> Tracer:
    """The tracer exporting to ``exporter``; :data:`NO_TRACER`, with a warning, when the
    ``otel`` extra is not installed (an agent runs on without spans)."""
    if exporter is None:
        return NO_TRACER
    try:
        from mas_core.telemetry import otel  # noqa: PLC0415 - only when tracing is on
    except ImportError as exc:
        logging.getLogger(__name__).warning(
            "the OTEL_* variables ask for traces, but OpenTelemetry is not installed (%s): "
            "no spans; pip install 'mas[otel]'",
            exc,
        )
        return NO_TRACER
    return otel.OtelTracer.exporting(exporter, service, attributes)
