"""What ``mas up`` prints: progress lines, agents' prefixed output, and the summary table.

Plain text, one writer at a time (output comes from several threads), flushed line by line, so
it reads the same on a terminal, in a pipe and in a CI log. :func:`format_table` and
:func:`aligned` are pure (``mas status`` aligns its table with the latter).
Used by :mod:`mas_cli.local.supervisor` and :mod:`mas_cli.local.agent_process`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from mas_cli.local.metrics import MessageCounts

PROGRESS_PREFIX = "mas"
_HEADERS = (
    "AGENT",
    "REPLICA",
    "PORT",
    "STATUS",
    "RESTARTS",
    "SIDECAR RESTARTS",
    "SENT",
    "DELIVERED",
    "REPLIES",
    "REFUSED",
    "DEAD LETTERS",
)


@dataclass(frozen=True)
class ReplicaRow:
    """One line of the summary table."""

    agent_id: str
    replica: int
    port: int
    status: str
    restarts: int
    sidecar_restarts: int
    counts: MessageCounts


def _count(value: float | None) -> str:
    return "-" if value is None else str(int(value))


def format_table(rows: list[ReplicaRow]) -> list[str]:
    """The table's lines: a header, then one row per replica, columns aligned."""
    cells = [_HEADERS] + [
        (
            row.agent_id,
            str(row.replica),
            str(row.port),
            row.status,
            str(row.restarts),
            str(row.sidecar_restarts),
            _count(row.counts.sent),
            _count(row.counts.delivered),
            _count(row.counts.replies),
            _count(row.counts.refused),
            _count(row.counts.dead_letters),
        )
        for row in rows
    ]
    return aligned(cells)


def aligned(cells: Sequence[tuple[str, ...]]) -> list[str]:
    """Lines of cells (the first the header), each column as wide as its widest cell."""
    widths = [max(len(line[column]) for line in cells) for column in range(len(cells[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]


class Console:
    """Serializes writes from the supervisor and the agents' output threads."""

    def __init__(self, out: TextIO, prefix_width: int = len(PROGRESS_PREFIX)) -> None:
        self._out = out
        self._lock = threading.Lock()
        self.prefix_width = max(prefix_width, len(PROGRESS_PREFIX))

    def _write(self, lines: list[str]) -> None:
        with self._lock:
            for line in lines:
                self._out.write(line + "\n")
            self._out.flush()

    def output(self, prefix: str, line: str) -> None:
        """One line of a child's output, as ``<prefix> | <line>``."""
        self._write([f"{prefix.ljust(self.prefix_width)} | {line}"])

    def progress(self, message: str) -> None:
        """A progress line of ``mas up`` itself."""
        self.output(PROGRESS_PREFIX, message)

    def table(self, rows: list[ReplicaRow]) -> None:
        """The summary table, between blank lines."""
        self._write(["", *format_table(rows), ""])
