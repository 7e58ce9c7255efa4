"""Observability shared by every mas program: spans (:mod:`.tracing`, over OpenTelemetry when the
standard ``OTEL_*`` variables ask for it) and log lines (:mod:`.logs`, text or JSON).

Nothing here imports OpenTelemetry unless tracing is configured (:mod:`.otel` is loaded then).
"""
