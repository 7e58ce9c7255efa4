"""Log lines of the mas programs — the sidecar, the operator and ``mas up`` — in one of two
formats, with the same fields.

``MAS_LOG_FORMAT`` (read by :meth:`mas_core.settings.EnvSettings.log_format`) is ``text`` (the
default: ``time level logger message`` and then ``key=value`` for each field present) or
``json`` (one JSON object per line: ``time``, ``level``, ``logger``, ``message``, the fields
present, and ``exception`` with the traceback). The fields are :data:`FIELDS`: ``agent_id`` on
every line of a program that serves one agent (a sidecar), and on a line about a message its
``message_id`` and ``trace_id`` too; a logging call passes them with
``extra=message_fields(envelope)``.

Each program calls :func:`setup` once at start, after its settings were read.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

import orjson

from mas_core.envelope import Envelope
from mas_core.telemetry.tracing import trace_id

LOG_FORMATS = ("text", "json")
FIELDS = ("agent_id", "message_id", "trace_id")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def message_fields(envelope: Envelope, **more: str) -> dict[str, str]:
    """The fields of a line about ``envelope`` (its id, its trace's id when it has one), for a
    logging call's ``extra``; ``more`` may name its ``agent_id`` (in a program serving many)."""
    fields = {"message_id": envelope.id, **more}
    trace = trace_id(envelope.trace)
    if trace is not None:
        fields["trace_id"] = trace
    return fields


def _fields(record: logging.LogRecord) -> dict[str, str]:
    return {name: str(getattr(record, name)) for name in FIELDS if getattr(record, name, None)}


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``."""

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{name}={value}" for name, value in _fields(record).items())
        if not fields:
            return line
        first, newline, rest = line.partition("\n")  # a traceback stays below the fields
        return f"{first} {fields}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document).decode()


class _Defaults(logging.Filter):
    """Gives every record the program's own fields (e.g. the sidecar's agent id) unless the
    logging call named others."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        super().__init__()
        self._fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in self._fields.items():
            if not getattr(record, name, None):
                setattr(record, name, value)
        return True


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` (one of :data:`LOG_FORMATS`)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


def handler(
    log_format: str, fields: Mapping[str, str] | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """A handler writing records to ``stream`` (standard error) in ``log_format``, each with
    ``fields`` (e.g. ``{"agent_id": ...}``) unless the record names its own."""
    written = logging.StreamHandler(stream or sys.stderr)
    written.setFormatter(formatter(log_format))
    written.addFilter(_Defaults(fields or {}))
    return written


def setup(*, level: str, log_format: str, fields: Mapping[str, str] | None = None) -> None:
    """Send the process's log records at ``level`` and up to standard error, as
    :func:`handler` writes them, instead of wherever they went."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler(log_format, fields))
    root.setLevel(level)
