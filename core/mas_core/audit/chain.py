"""The audit trail: hash-chained entries, one chain per sidecar replica, and their verification.

Each sidecar replica appends its decisions to its agent's audit stream as a chain: entry ``n``
carries ``prev`` (the hash of entry ``n-1``, or :data:`GENESIS`) and
``hash = SHA-256(prev \\n n \\n event-json)``. The latest ``n:hash`` of every chain is also kept in
a heads hash, so removing entries at the end of a chain is detected too.

A chain alone cannot tell a trail its own agent rewrote from scratch (its sidecar's Redis user
may append to its stream and trim it) from the real one. So the control plane takes signed
checkpoints (:mod:`mas_core.audit.checkpoints`) made of :class:`Mark` s: "the trail's first
``total`` entries end at stream id ``at``, where each replica's chain ends at ``chains``".
:class:`Follower` walks entries in stream order from a mark (the genesis, or where the control plane
cut the stream after archiving what it removed) and checks every mark it passes; :func:`verify`
reports an altered, removed, reordered or re-chained entry, and where it is.

Pure; used by the sidecar (to append), the control plane (:mod:`mas_control.audit_keeper`, to
checkpoint) and ``mas audit`` (to verify).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

GENESIS = "0" * 64
F_REPLICA, F_SEQ, F_PREV, F_HASH, F_EVENT = b"r", b"n", b"p", b"h", b"e"

StreamId = tuple[int, int]  # a stream entry id, ``<ms>-<seq>``, as numbers that sort
Link = tuple[int, str]  # where a chain ends: the sequence number and hash of its last entry
Entry = tuple[bytes, Mapping[bytes, bytes]]  # a stream entry: its id and fields


def entry_hash(prev: str, seq: int, event: bytes) -> str:
    return hashlib.sha256(b"%s\n%d\n%s" % (prev.encode(), seq, event)).hexdigest()


def parse_id(raw: bytes | str) -> StreamId:
    """``b"1712-3"`` as ``(1712, 3)``; ValueError when it is not a stream id."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


@dataclass
class Chain:
    """The growing end of one replica's chain."""

    replica: str
    seq: int = 0
    head: str = GENESIS

    @classmethod
    def resume(cls, replica: str, head: bytes | None) -> Chain:
        """Continue from a stored ``seq:hash`` head (a fresh chain when there is none)."""
        if not head:
            return cls(replica)
        seq, _, digest = head.decode().partition(":")
        return cls(replica, int(seq), digest)

    def append(self, event: Mapping[str, Any]) -> dict[bytes, bytes]:
        """Stream fields of the next entry; advances the chain."""
        body = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
        self.seq += 1
        prev, self.head = self.head, entry_hash(self.head, self.seq, body)
        return {
            F_REPLICA: self.replica.encode(),
            F_SEQ: str(self.seq).encode(),
            F_PREV: prev.encode(),
            F_HASH: self.head.encode(),
            F_EVENT: body,
        }

    @property
    def head_value(self) -> str:
        return f"{self.seq}:{self.head}"


@dataclass(frozen=True)
class Mark:
    """A point of a trail: its first ``total`` entries end at stream id ``at``, and there each
    replica's chain ends at ``chains`` (every replica seen since the trail began)."""

    at: StreamId
    total: int
    chains: Mapping[str, Link]

    def to_document(self) -> dict[str, Any]:
        return {
            "id": format_id(self.at),
            "total": self.total,
            "chains": {replica: [seq, digest] for replica, (seq, digest) in self.chains.items()},
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Mark:
        """The mark :meth:`to_document` wrote; ValueError, KeyError or TypeError otherwise."""
        chains = {
            str(replica): (int(link[0]), str(link[1]))
            for replica, link in dict(document["chains"]).items()
        }
        return cls(parse_id(str(document["id"])), int(document["total"]), chains)


START = Mark((0, 0), 0, {})  # where every trail begins


@dataclass
class Report:
    """The outcome of :func:`verify`: entries checked and each problem found."""

    entries: int = 0
    chains: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Follower:
    """Follows every replica's chain through entries fed in stream order, from ``start``,
    checking each of ``marks`` (``(label, mark)``, the label names it in problems) as the
    stream passes it. After a mark that does not hold, it goes on from the mark's own state
    (which the control plane signed), so each later entry is judged against the real chain."""

    def __init__(self, start: Mark = START, marks: Sequence[tuple[str, Mark]] = ()) -> None:
        self.chains: dict[str, Link] = dict(start.chains)
        self.total = start.total
        self.last = start.at
        self.fed = 0
        self.problems: list[str] = []
        self._marks = sorted((m for m in marks if m[1].at >= start.at), key=lambda m: m[1].at)

    def mark(self) -> Mark:
        """Where the trail stands after the entries fed so far."""
        return Mark(self.last, self.total, dict(self.chains))

    def feed(self, raw_id: bytes, fields: Mapping[bytes, bytes]) -> None:
        """Check the next entry of the stream."""
        where = f"entry {raw_id.decode(errors='replace')}"
        try:
            entry_id = parse_id(raw_id)
            replica = fields[F_REPLICA].decode()
            seq = int(fields[F_SEQ])
            prev, digest, body = fields[F_PREV].decode(), fields[F_HASH].decode(), fields[F_EVENT]
        except (KeyError, ValueError, UnicodeDecodeError):
            self.problems.append(f"{where}: not an audit entry (fields missing or malformed)")
            return
        if entry_id <= self.last:
            self.problems.append(f"{where}: out of order: comes after entry {format_id(self.last)}")
            return
        self._pass_marks(entry_id)
        self.fed += 1
        self.total += 1
        self.last = entry_id
        where += f" (replica {replica}, #{seq})"
        if entry_hash(prev, seq, body) != digest:
            self.problems.append(f"{where}: altered: its content does not match its hash")
        last_seq, last_hash = self.chains.get(replica, (0, GENESIS))
        if seq <= last_seq:
            self.problems.append(f"{where}: out of order: comes after #{last_seq}")
            return
        if seq > last_seq + 1:
            self.problems.append(f"{where}: entries #{last_seq + 1}..#{seq - 1} are missing")
        elif prev != last_hash:
            self.problems.append(f"{where}: does not follow #{last_seq} (altered or replaced)")
        self.chains[replica] = (seq, digest)

    def finish(self) -> None:
        """Check the marks the entries fed did not reach."""
        self._pass_marks(None)

    def _pass_marks(self, before: StreamId | None) -> None:
        while self._marks and (before is None or self._marks[0][1].at < before):
            label, mark = self._marks.pop(0)
            self._check(label, mark)

    def _check(self, label: str, mark: Mark) -> None:
        if self.total != mark.total:
            change = "removed" if self.total < mark.total else "added"
            self.problems.append(
                f"{label} counts {mark.total} entries up to entry {format_id(mark.at)}, the "
                f"trail {self.total}: entries below it were {change}"
            )
        for replica in sorted(set(mark.chains) | set(self.chains)):
            expected, found = mark.chains.get(replica), self.chains.get(replica)
            if expected == found:
                continue
            where = f"replica {replica}"
            if expected is None:
                self.problems.append(f"{where}: has entries below {label}, which has none of it")
            elif found is None or found[0] < expected[0]:
                first = found[0] + 1 if found else 1
                self.problems.append(
                    f"{where}: entries #{first}..#{expected[0]}, covered by {label}, are missing"
                )
            elif found[0] == expected[0]:
                self.problems.append(
                    f"{where}: entry #{expected[0]} is not the one {label} recorded: "
                    "the chain was rewritten below it"
                )
            else:
                self.problems.append(
                    f"{where}: reaches #{found[0]} where {label} recorded #{expected[0]}: "
                    "the chain was rewritten below it"
                )
        self.chains = dict(mark.chains)
        self.total = mark.total
        self.last = max(self.last, mark.at)


def verify(
    entries: Iterable[Entry],
    heads: Mapping[bytes, bytes],
    *,
    start: Mark = START,
    marks: Sequence[tuple[str, Mark]] = (),
    removed: int | None = None,
    cut: Mark | None = None,
) -> Report:
    """Check every chain in ``entries`` (stream order, after ``start``) against itself, the
    ``marks`` it passes and ``heads``. ``removed``: how many entries the stream itself counts
    as ever removed from it, which only the control plane's ``cut`` (by default ``start``)
    may explain (:func:`removal_problem`)."""
    follower = Follower(start, marks)
    for raw_id, fields in entries:
        follower.feed(raw_id, fields)
    follower.finish()
    report = Report(follower.fed, problems=follower.problems)
    if removed is not None:
        problem = removal_problem(removed, cut or start)
        if problem is not None:
            report.problems.append(problem)
    for raw_replica, raw_head in heads.items():
        replica = raw_replica.decode()
        head_seq, _, head_hash = raw_head.decode().partition(":")
        last_seq, last_hash = follower.chains.get(replica, (0, GENESIS))
        if int(head_seq) > last_seq:
            report.problems.append(
                f"replica {replica}: entries #{last_seq + 1}..#{head_seq} are missing at the end"
            )
        elif int(head_seq) == last_seq and head_hash != last_hash:
            report.problems.append(f"replica {replica}: last entry #{last_seq} was replaced")
    report.chains = len(follower.chains)
    return report


def removal_problem(removed: int, cut: Mark) -> str | None:
    """What is wrong when a stream counts ``removed`` entries removed from it (``XINFO STREAM``:
    ``entries-added`` less ``length``; no sidecar may change that count) while the control
    plane removed the ``cut.total`` entries up to its ``cut``; None when they agree."""
    if removed == cut.total:
        return None
    made = f"cut {cut.total} at {format_id(cut.at)}" if cut.total else "made no cut"
    return (
        f"{removed} entries were removed from the stream, and the control plane {made}: the "
        "trail was trimmed by someone else"
    )
