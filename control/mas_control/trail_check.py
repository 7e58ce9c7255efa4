"""Reading and checking one agent's audit trail: the control plane's last checkpoint, the
entries in Redis (and in the archive, when given), their hash chains.

:func:`check_trail` runs :func:`mas_core.audit.chain.verify` over what :func:`stored_trail`
read, against the checkpoint's marks and the stream's own count of removed entries
(``XINFO STREAM``), and says what it found (:class:`TrailCheck`). It reads only: the caller
decides whether to hold the trail meanwhile (``mas audit verify`` does, with
:func:`mas_control.audit_keeper.holding_trail`; the read-only dashboard cannot, and reads again
when a cut happened during its read). Used by :mod:`mas_cli.audit_trails` (``mas audit verify``,
``--cross``) and the dashboard (:mod:`mas_dashboard.reading`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import redis
from nacl.signing import VerifyKey

from mas_control.audit_keeper import read_entries
from mas_core.audit.archive import ArchiveError, read_segments, trail_directory
from mas_core.audit.chain import START, Entry, Mark, StreamId, format_id, parse_id, verify
from mas_core.audit.checkpoints import Checkpoint, CheckpointError, parse_checkpoint
from mas_core.keys import AgentKeys, audit_checkpoint


@dataclass(frozen=True)
class Evidence:
    """What verification reads besides Redis: the anchor keys that must have signed the
    checkpoints (None: signatures are not checked, and the report says so), and the control
    plane's archive directory (None: the trail is verified from its last cut)."""

    trust: Mapping[str, VerifyKey] | None = None
    archive: Path | None = None


NO_EVIDENCE = Evidence()  # Redis only: signatures not checked, the trail from its last cut


@dataclass(frozen=True)
class Stored:
    """What Redis (and the archive, when given) holds of one agent's trail."""

    checkpoint: Checkpoint | None
    entries: Iterable[Entry]  # in stream order, the archive's first; read once, as they come
    begins_after: Mark  # where ``entries`` begin
    marks: list[tuple[str, Mark]]  # the checkpoints' marks the entries must pass
    problems: list[str]  # about the checkpoints themselves
    said: list[str]  # what the checkpoints and archive tell, for the report


def stored_checkpoint(
    client: redis.Redis, agent_id: str, trust: Mapping[str, VerifyKey] | None
) -> tuple[Checkpoint | None, list[str], list[str]]:
    """The trail's last checkpoint (None when there is none or it cannot be trusted), the
    problems with it, and what to say about it."""
    raw = client.get(audit_checkpoint(agent_id))
    if raw is None:
        return (
            None,
            [],
            [
                "no checkpoint yet: the control plane has not checkpointed this trail, so it "
                "cannot tell a trail its own agent rewrote from the real one"
            ],
        )
    try:
        checkpoint, kid = parse_checkpoint(raw, trust)
    except CheckpointError as exc:
        return None, [f"the control plane's checkpoint cannot be used: {exc}"], []
    if checkpoint.agent != agent_id:
        return None, [f"the checkpoint stored for {agent_id} is {checkpoint.agent}'s"], []
    signed = (
        f"signed by anchor {kid}, verified"
        if trust is not None
        else f"signed by anchor {kid}, NOT verified (pass --trust with the anchor's public key)"
    )
    said = [
        f"checked against {checkpoint.label}: {checkpoint.head.total} entries up to "
        f"{format_id(checkpoint.head.at)}; {signed}"
    ]
    if checkpoint.cut.total:
        said.append(
            f"its first {checkpoint.cut.total} entries (up to {format_id(checkpoint.cut.at)}) "
            "were archived, then trimmed from Redis"
        )
    return checkpoint, [], said


def stored_trail(client: redis.Redis, agent_id: str, evidence: Evidence) -> Stored:
    """Read ``agent_id``'s trail (see :class:`Stored`); ArchiveError for an archive segment that
    cannot be read (also while its entries are iterated)."""
    trust, archive = evidence.trust, evidence.archive
    checkpoint, problems, said = stored_checkpoint(client, agent_id, trust)
    redis_entries = read_entries(client, AgentKeys(agent_id).audit, after=START.at)
    if checkpoint is None:
        return Stored(None, redis_entries, START, [], problems, said)
    marks = [(checkpoint.label, checkpoint.head)]
    if archive is None or not checkpoint.cut.total:
        return Stored(checkpoint, redis_entries, checkpoint.cut, marks, problems, said)
    directory = trail_directory(archive, agent_id, checkpoint.trail)
    segments = []
    for segment in read_segments(directory):
        if segment.after >= checkpoint.cut.at:
            continue  # written by a cut that did not complete: its entries are still in Redis
        try:
            cut_by, _ = parse_checkpoint(segment.checkpoint, trust)
        except CheckpointError as exc:
            problems.append(f"{segment.path}: its checkpoint cannot be used: {exc}")
            continue
        segments.append(segment)
        marks.append((f"{cut_by.label}, archived in {segment.path.name}", cut_by.cut))
    marks.append((f"{checkpoint.label} (its cut)", checkpoint.cut))
    said.append(f"the entries before it read from {len(segments)} segment(s) in {directory}")
    archived = itertools.chain.from_iterable(segment.entries() for segment in segments)
    entries = itertools.chain(archived, redis_entries)
    return Stored(checkpoint, entries, START, marks, problems, said)


@dataclass(frozen=True)
class TrailCheck:
    """What :func:`check_trail` found: the entries checked, in how many chains, each problem
    (none: intact), what the checkpoints and archive tell, the checkpoint's head (None without
    one) and how many entries come after it, the count of entries removed from the stream,
    and why the archive could not be read (None when it could, or none was given)."""

    entries: int
    chains: int
    problems: list[str]
    said: list[str]
    head: StreamId | None
    newer: int
    removed: int | None
    unreadable: str | None = None


def removed_entries(client: redis.Redis, agent_id: str) -> int | None:
    """How many entries were ever removed from ``agent_id``'s audit stream (None: no stream)."""
    keys = AgentKeys(agent_id)
    if not client.exists(keys.audit):
        return None
    info = client.xinfo_stream(keys.audit)
    return int(info["entries-added"]) - int(info["length"])


def check_trail(client: redis.Redis, agent_id: str, evidence: Evidence = NO_EVIDENCE) -> TrailCheck:
    """Verify ``agent_id``'s trail as stored now (see the module docstring)."""
    keys = AgentKeys(agent_id)
    head: StreamId | None = None
    newer = 0  # entries after the checkpoint's head

    def counted(entries: Iterable[Entry]) -> Iterator[Entry]:
        nonlocal newer
        for entry in entries:
            if head is not None and parse_id(entry[0]) > head:
                newer += 1
            yield entry

    removed = removed_entries(client, agent_id)
    try:
        stored = stored_trail(client, agent_id, evidence)
        head = stored.checkpoint.head.at if stored.checkpoint else None
        report = verify(
            counted(stored.entries),
            client.hgetall(keys.audit_heads),
            start=stored.begins_after,
            marks=stored.marks,
            removed=removed,
            cut=stored.checkpoint.cut if stored.checkpoint else START,
        )
    except (ArchiveError, OSError) as exc:
        return TrailCheck(0, 0, [], [], None, 0, removed, unreadable=str(exc))
    return TrailCheck(
        report.entries,
        report.chains,
        stored.problems + report.problems,
        stored.said,
        head,
        newer,
        removed,
    )
