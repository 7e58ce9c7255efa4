"""``mas audit verify | tail | export``: read an agent's audit trail straight from Redis.

These are operator tools: they take a Redis URL with read access to the agent's keys and to
the control plane's checkpoints (the sidecars' own credentials reach neither). Output of
``tail`` and ``export`` is JSON lines, one entry each
(:func:`mas_core.audit.archive.entry_document`).

``verify`` checks the hash chains against the control plane's last checkpoint
(:mod:`mas_core.audit.checkpoints`: its signature too, given the anchor's public key) and the
stream's own count of the entries removed from it; with the archive directory, the whole trail since
it began, segment by segment; with ``--cross``, the messages in the trail against the trails of
the agents it exchanged them with (:mod:`mas_cli.audit_cross`). Called by :mod:`mas_cli.main`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import orjson
import redis
from nacl.signing import VerifyKey

from mas_cli.audit_cross import RECEIVED, SENT, Trail, cross_check, records
from mas_control.audit_keeper import holding_trail, read_entries
from mas_core.audit.archive import ArchiveError, entry_document, read_segments, trail_directory
from mas_core.audit.chain import START, Entry, Mark, StreamId, format_id, parse_id, verify
from mas_core.audit.checkpoints import Checkpoint, CheckpointError, parse_checkpoint
from mas_core.envelope import ENTRY_FIELD
from mas_core.identity.tokens import key_id, load_public_key_pem
from mas_core.keys import AgentKeys, audit_checkpoint

SHOWN_PROBLEMS = 50  # a rewritten trail can break at every entry: the first ones tell
HOLD_WAIT = 60.0  # seconds to wait for a round of the control plane to finish with a trail


def load_trust(paths: Sequence[Path]) -> dict[str, VerifyKey]:
    """Anchor public keys by key id, from PEM files and directories of ``*.pub`` files (an
    anchor directory, or an agent credentials directory's ``trust/``); KeyFormatError or
    OSError when one cannot be read."""
    keys = {}
    for path in paths:
        files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
        for file in files:
            key = load_public_key_pem(file.read_bytes())
            keys[key_id(key)] = key
    return keys


@dataclass(frozen=True)
class Evidence:
    """What verification reads besides Redis: the anchor keys that must have signed the
    checkpoints (None: signatures are not checked, and the report says so), and the control
    plane's archive directory (None: the trail is verified from its last cut)."""

    trust: Mapping[str, VerifyKey] | None = None
    archive: Path | None = None


@dataclass(frozen=True)
class Stored:
    """What Redis (and the archive, when given) holds of one agent's trail."""

    checkpoint: Checkpoint | None
    entries: Iterable[Entry]  # in stream order, the archive's first; read once, as they come
    begins_after: Mark  # where ``entries`` begin
    marks: list[tuple[str, Mark]]  # the checkpoints' marks the entries must pass
    problems: list[str]  # about the checkpoints themselves
    said: list[str]  # what the checkpoints and archive tell, for the report


def _checkpoint(
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
    checkpoint, problems, said = _checkpoint(client, agent_id, trust)
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


def verify_trail(
    client: redis.Redis, agent_id: str, out: TextIO, evidence: Evidence = Evidence()
) -> bool:
    """Print the verification report; True when the trail is intact. TrailHeldError when the
    control plane holds the trail for longer than :data:`HOLD_WAIT` seconds."""
    keys = AgentKeys(agent_id)
    head: StreamId | None = None
    newer = 0  # entries after the checkpoint's head

    def counted(entries: Iterable[Entry]) -> Iterator[Entry]:
        nonlocal newer
        for entry in entries:
            if head is not None and parse_id(entry[0]) > head:
                newer += 1
            yield entry

    with _holding(client, agent_id):
        removed = None
        if client.exists(keys.audit):
            info = client.xinfo_stream(keys.audit)
            removed = int(info["entries-added"]) - int(info["length"])
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
            print(f"TAMPERED the archive cannot be read: {exc}", file=out)
            return False
    problems = stored.problems + report.problems
    for problem in problems[:SHOWN_PROBLEMS]:
        print(f"TAMPERED {problem}", file=out)
    if len(problems) > SHOWN_PROBLEMS:
        print(f"TAMPERED ... and {len(problems) - SHOWN_PROBLEMS} more problems", file=out)
    verdict = "intact" if not problems else f"NOT intact: {len(problems)} problem(s)"
    print(
        f"audit trail of {agent_id}: {report.entries} entries in {report.chains} chain(s), "
        f"{verdict}",
        file=out,
    )
    for line in stored.said:
        print(f"  {line}", file=out)
    if head is not None and newer:
        print(
            f"  {newer} entries after {format_id(head)} are not covered by a checkpoint yet "
            "(until the next one, entries its agent appended cannot be told from its sidecar's)",
            file=out,
        )
    return not problems


class TrailHeldError(RuntimeError):
    """The control plane's keeper held the trail all the time verification waited for it."""


@contextlib.contextmanager
def _holding(client: redis.Redis, agent_id: str) -> Iterator[None]:
    """Hold the trail while it is read, so that no cut of the control plane runs meanwhile
    (a cut in the middle of a read would look like entries gone missing)."""
    with holding_trail(client, agent_id, wait=HOLD_WAIT) as held:
        if not held:
            raise TrailHeldError(
                f"the control plane has been working on the audit trail of {agent_id} for "
                f"{HOLD_WAIT:g} seconds; try again"
            )
        yield


def _dead_letters(client: redis.Redis, agent_id: str) -> frozenset[str]:
    ids = set()
    for _, fields in read_entries(client, AgentKeys(agent_id).dlq, after=START.at):
        try:
            ids.add(str(orjson.loads(fields[ENTRY_FIELD])["id"]))
        except (KeyError, TypeError, orjson.JSONDecodeError):
            continue
    return frozenset(ids)


def _trail(client: redis.Redis, agent_id: str, evidence: Evidence) -> Trail:
    with _holding(client, agent_id):
        stored = stored_trail(client, agent_id, evidence)
        found = records(stored.entries)
    return Trail(found, stored.begins_after.at, _dead_letters(client, agent_id))


def cross_verify(
    client: redis.Redis, agent_id: str, out: TextIO, evidence: Evidence = Evidence()
) -> bool:
    """Print the cross-verification of ``agent_id``'s messages with its peers' trails; True
    when nothing is amiss. ArchiveError for an unreadable segment, TrailHeldError as for
    :func:`verify_trail`."""
    own = _trail(client, agent_id, evidence)
    peers = {
        peer: own if peer == agent_id else _trail(client, peer, evidence)
        for peer in sorted(
            {r.target for r in own.records if r.decision == SENT}
            | {r.sender for r in own.records if r.decision == RECEIVED}
        )
    }
    report = cross_check(agent_id, own, peers)
    for mismatch in report.mismatches[:SHOWN_PROBLEMS]:
        print(f"MISMATCH {mismatch}", file=out)
    if len(report.mismatches) > SHOWN_PROBLEMS:
        print(f"MISMATCH ... and {len(report.mismatches) - SHOWN_PROBLEMS} more", file=out)
    verdict = "consistent" if report.ok else f"{len(report.mismatches)} mismatch(es)"
    others = len(peers) - (agent_id in peers)
    print(f"messages of {agent_id} against {others} other trail(s): {verdict}", file=out)
    for outcome, count in sorted(report.counts.items()):
        print(f"  {outcome}: {count}", file=out)
    return report.ok


def _write(out: TextIO, entries: Iterable[Entry]) -> int:
    count = 0
    for entry_id, fields in entries:
        out.write(orjson.dumps(entry_document(entry_id, fields)).decode() + "\n")
        count += 1
    return count


def export_trail(client: redis.Redis, agent_id: str, out: TextIO) -> int:
    """Write every entry in Redis as a JSON line; how many."""
    return _write(out, read_entries(client, AgentKeys(agent_id).audit, after=START.at))


def tail_trail(client: redis.Redis, agent_id: str, out: TextIO, *, last: int, follow: bool) -> None:
    """The ``last`` entries, then (with ``follow``) new ones as they come, until interrupted."""
    keys = AgentKeys(agent_id)
    entries = list(reversed(client.xrevrange(keys.audit, count=last)))
    _write(out, entries)
    out.flush()
    cursor: bytes | str = entries[-1][0] if entries else "$"
    while follow:
        answer = client.xread({keys.audit: cursor}, count=100, block=1000)
        for _stream, new in answer or ():
            cursor = new[-1][0]
            _write(out, new)
        out.flush()
