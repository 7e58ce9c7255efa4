"""The audit trail: hash-chained entries, one chain per sidecar replica, and their verification.

Each sidecar replica appends its decisions to its agent's audit stream as a chain: entry ``n``
carries ``prev`` (the hash of entry ``n-1``, or :data:`GENESIS`) and
``hash = SHA-256(prev \\n n \\n event-json)``. The latest ``n:hash`` of every chain is also kept in
a heads hash, so removing entries at the end of a chain is detected too. :func:`verify` reports
an altered, removed or reordered entry and where it is.

Pure; used by the sidecar (to append) and by ``mas audit`` (to verify, tail and export).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

GENESIS = "0" * 64
F_REPLICA, F_SEQ, F_PREV, F_HASH, F_EVENT = b"r", b"n", b"p", b"h", b"e"


def entry_hash(prev: str, seq: int, event: bytes) -> str:
    return hashlib.sha256(b"%s\n%d\n%s" % (prev.encode(), seq, event)).hexdigest()


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


@dataclass
class Report:
    """The outcome of :func:`verify`: entries checked and each problem found."""

    entries: int = 0
    chains: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    entries: Iterable[tuple[bytes, Mapping[bytes, bytes]]], heads: Mapping[bytes, bytes]
) -> Report:
    """Check every chain in ``entries`` (stream order) against itself and ``heads``."""
    report = Report()
    chains: dict[str, tuple[int, str]] = {}
    for raw_id, fields in entries:
        report.entries += 1
        where = f"entry {raw_id.decode()}"
        try:
            replica = fields[F_REPLICA].decode()
            seq = int(fields[F_SEQ])
            prev, digest, body = fields[F_PREV].decode(), fields[F_HASH].decode(), fields[F_EVENT]
        except (KeyError, ValueError, UnicodeDecodeError):
            report.problems.append(f"{where}: not an audit entry (fields missing or malformed)")
            continue
        where += f" (replica {replica}, #{seq})"
        if entry_hash(prev, seq, body) != digest:
            report.problems.append(f"{where}: altered: its content does not match its hash")
        last_seq, last_hash = chains.get(replica, (0, GENESIS))
        if seq <= last_seq:
            report.problems.append(f"{where}: out of order: comes after #{last_seq}")
            continue
        if seq > last_seq + 1:
            report.problems.append(f"{where}: entries #{last_seq + 1}..#{seq - 1} are missing")
        elif prev != last_hash:
            report.problems.append(f"{where}: does not follow #{last_seq} (altered or replaced)")
        chains[replica] = (seq, digest)
    for raw_replica, raw_head in heads.items():
        replica = raw_replica.decode()
        head_seq, _, head_hash = raw_head.decode().partition(":")
        last_seq, last_hash = chains.get(replica, (0, GENESIS))
        if int(head_seq) > last_seq:
            report.problems.append(
                f"replica {replica}: entries #{last_seq + 1}..#{head_seq} are missing at the end"
            )
        elif int(head_seq) == last_seq and head_hash != last_hash:
            report.problems.append(f"replica {replica}: last entry #{last_seq} was replaced")
    report.chains = len(chains)
    return report
