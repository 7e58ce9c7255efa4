"""Audit entries as JSON lines, and the archive of what the control plane trimmed from Redis.

One entry is one JSON object (:func:`entry_document`): ``{"id", "replica", "seq", "prev",
"hash", "event"}``, ``event`` parsed. The chain's hash covers the event's exact bytes, which
are the event written back by orjson with sorted keys — as the sidecar writes it; an event
that does not come back the same way (not written by a sidecar) also carries ``raw``, its
bytes in base64, so :func:`entry_fields` restores every entry exactly.

The archive of a trail is a directory of segments, one per cut
(``<root>/<namespace>/<name>/<trail>/after-<ms>-<seq>.jsonl``, named after the cut it
continues from, so a cut retried after a crash rewrites the same file): the entries the cut
removed from Redis, in stream order, then one last line, the signed checkpoint made with the
cut (:mod:`mas_core.audit.checkpoints`). Files are written whole under a temporary name and renamed,
readable by their owner only (mode 0600, directories 0700).

    ArchiveError                  a segment that cannot be read back

Used by ``mas audit export`` / ``tail`` (the entry format), the control plane
(:mod:`mas_control.audit_keeper`, writing segments) and ``mas audit verify --archive``.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mas_core.audit.chain import (
    F_EVENT,
    F_HASH,
    F_PREV,
    F_REPLICA,
    F_SEQ,
    Entry,
    StreamId,
    parse_id,
)
from mas_core.identity.credentials import PRIVATE_MODE, private_directory, write_atomic

SEGMENT_PREFIX, SEGMENT_SUFFIX = "after-", ".jsonl"


class ArchiveError(ValueError):
    """An archive segment is missing its checkpoint or holds a line that is no entry."""


def entry_document(entry_id: bytes, fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """``entry_id``'s entry as one JSON object (see the module docstring)."""
    raw = fields.get(F_EVENT, b"")
    event: Any
    try:
        event = orjson.loads(raw)
        exact = orjson.dumps(event, option=orjson.OPT_SORT_KEYS) == raw
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        event, exact = raw.decode(errors="replace"), False
    document = {
        "id": entry_id.decode(),
        "replica": fields.get(F_REPLICA, b"").decode(errors="replace"),
        "seq": int(fields.get(F_SEQ, b"0") or 0),
        "prev": fields.get(F_PREV, b"").decode(errors="replace"),
        "hash": fields.get(F_HASH, b"").decode(errors="replace"),
        "event": event,
    }
    if not exact:
        document["raw"] = base64.b64encode(raw).decode("ascii")
    return document


def entry_fields(document: Mapping[str, Any]) -> Entry:
    """The stream entry :func:`entry_document` described; KeyError, TypeError or ValueError
    when ``document`` is not one."""
    raw = document.get("raw")
    if raw is not None:
        event = base64.b64decode(str(raw), validate=True)
    else:
        event = orjson.dumps(document["event"], option=orjson.OPT_SORT_KEYS)
    fields = {
        F_REPLICA: str(document["replica"]).encode(),
        F_SEQ: str(int(document["seq"])).encode(),
        F_PREV: str(document["prev"]).encode(),
        F_HASH: str(document["hash"]).encode(),
        F_EVENT: event,
    }
    return str(document["id"]).encode(), fields


def trail_directory(root: Path, agent_id: str, trail: str) -> Path:
    """Where the segments of ``agent_id``'s trail ``trail`` are kept under ``root``."""
    namespace, _, name = agent_id.partition("/")
    return root / namespace / name / trail


@dataclass(frozen=True)
class Segment:
    """Entries one cut removed from Redis (read from the file as they are iterated), and the
    signed checkpoint made with the cut."""

    path: Path
    after: StreamId
    checkpoint: bytes

    def entries(self) -> Iterator[Entry]:
        """The segment's entries, in stream order; ArchiveError at a line that is no entry."""
        with self.path.open("rb") as lines:
            previous: bytes | None = None
            for number, line in enumerate(lines):
                if previous is not None:
                    yield _entry(previous, self.path, number)
                previous = line


def _entry(line: bytes, path: Path, number: int) -> Entry:
    try:
        return entry_fields(orjson.loads(line))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ArchiveError(f"{path}:{number}: not an audit entry") from None


def write_segment(
    directory: Path, after: StreamId, entries: Sequence[Entry], signed: bytes
) -> Path:
    """Archive ``entries`` (those after stream id ``after``) with the ``signed`` checkpoint
    of their cut; the file written."""
    private_directory(directory)
    lines = [orjson.dumps(entry_document(entry_id, fields)) for entry_id, fields in entries]
    path = directory / f"{SEGMENT_PREFIX}{after[0]}-{after[1]}{SEGMENT_SUFFIX}"
    write_atomic(path, b"\n".join([*lines, signed, b""]), PRIVATE_MODE)
    return path


def read_segments(directory: Path) -> list[Segment]:
    """The segments in ``directory`` in stream order (none when it does not exist);
    ArchiveError for an empty one."""
    if not directory.is_dir():
        return []
    segments = []
    for path in directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"):
        try:
            after = parse_id(path.name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)])
        except ValueError:
            continue  # not a segment of ours
        with path.open("rb") as lines:
            last = deque(lines, maxlen=1)  # the checkpoint
        if not last or not last[0].strip():
            raise ArchiveError(f"{path}: empty")
        segments.append(Segment(path, after, last[0].rstrip(b"\n")))
    return sorted(segments, key=lambda segment: segment.after)
