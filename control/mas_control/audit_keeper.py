"""The control plane's keeper of audit trails: signed checkpoints, and archive-then-trim.

One round for one agent (:func:`keep_trail`) — the operator runs one per Agent on a timer, and
``mas up`` one per agent from a thread of its own:

1. read the trail's last checkpoint (:mod:`mas_core.audit.checkpoints`) from the key only the
control
   plane writes;
2. ask the stream how many entries were ever removed from it (``XINFO STREAM``:
   ``entries-added`` less ``length``, a count no sidecar can set), which only the control
   plane's own cuts may explain;
3. follow every replica's chain through the entries added since the checkpoint's head
   (:class:`mas_core.audit.chain.Follower`): the new head;
4. with a retention (the agent's GatewayPolicy, ``audit.retention``) and an archive directory:
   while the checkpointed entries past the retention make at least a batch (:func:`cut_batch`),
   write them to a segment of the archive (:mod:`mas_core.audit.archive`) with the checkpoint of
   their cut, then, in one transaction, store that checkpoint and trim the stream exactly up
   to the cut;
5. otherwise store the new checkpoint when the head moved (or the stored one was signed by
   another anchor: ``mas up`` has a new one each run, and an operator's may be replaced).

A round that finds a problem (entries removed past the cut, a chain that does not continue
from the checkpoint, a count that does not add up) stores nothing: the last good checkpoint
stays, so the evidence does too, and the round says what it found. An administrator who has
dealt with the incident deletes the checkpoint key to start the trail's checkpoints afresh.

One round at a time per trail: a round holds ``mas:control:{ns/name}:audit-keeper`` while it
runs (a second control plane, or a second round, leaves the trail alone meanwhile), and so does
``mas audit verify`` while it reads the trail (:func:`holding_trail`). Synchronous
(the operator's handlers run in threads; ``mas up`` calls it from a thread); the caller owns
the client and handles ``redis.RedisError``.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from mas_core.audit.archive import trail_directory, write_segment
from mas_core.audit.chain import (
    START,
    Entry,
    Follower,
    Mark,
    StreamId,
    format_id,
    parse_id,
    removal_problem,
)
from mas_core.audit.checkpoints import Checkpoint, CheckpointError, parse_checkpoint
from mas_core.identity.credentials import Anchor
from mas_core.keys import AgentKeys, audit_checkpoint, audit_keeper
from mas_core.policy.document import AuditRetention

_PAGE = 1000
HOLD_MS = 300_000  # a round holds its trail this long at most (one that died lets go then)


@dataclass(frozen=True)
class Limits:
    """How much one round does at most; the rest waits for the next round."""

    read: int = 100_000  # entries checked, and entries archived, per round
    segment: int = 10_000  # entries per archive segment
    batch: int = 1_000  # the fewest entries worth a cut (a tenth of a retention in entries,
    # when that is less): Redis holds up to the retention plus that, and the archive gets no
    # segment of a handful of entries every round


@dataclass(frozen=True)
class Kept:
    """What a round left: the checkpoint in force (None before the first), the problem it
    found, and how many entries it archived and trimmed."""

    checkpoint: Checkpoint | None
    problem: str | None = None
    archived: int = 0


def read_entries(
    client: redis.Redis, stream: str, *, after: StreamId, upto: StreamId | None = None
) -> Iterator[Entry]:
    """The entries of ``stream`` after ``after`` (up to ``upto``), page by page."""
    start = f"({format_id(after)}" if after != (0, 0) else "-"
    end = format_id(upto) if upto is not None else "+"
    while True:
        page = client.xrange(stream, min=start, max=end, count=_PAGE)
        yield from page
        if len(page) < _PAGE:
            return
        start = b"(" + page[-1][0]


def trail_heads(client: redis.Redis, agent_ids: Sequence[str]) -> dict[str, bytes | None]:
    """The id of the newest entry of each agent's audit stream (None: empty or none), in one
    round trip: a round may pass over a trail whose newest entry is the one it saw last time
    (nothing was added; a sidecar can only append, and an append that trims adds an entry)."""
    with client.pipeline(transaction=False) as pipe:
        for agent_id in agent_ids:
            pipe.xrevrange(AgentKeys(agent_id).audit, count=1)
        answers = pipe.execute()
    return {
        agent_id: answer[0][0] if answer else None
        for agent_id, answer in zip(agent_ids, answers, strict=True)
    }


def keep_trail(
    client: redis.Redis,
    agent_id: str,
    anchor: Anchor,
    *,
    retention: AuditRetention | None,
    archive: Path | None,
    limits: Limits = Limits(),
    now_ms: int | None = None,
) -> Kept:
    """One round for ``agent_id``'s trail (see the module docstring)."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with holding_trail(client, agent_id) as held:
        kept, signer = _stored(client, agent_id)
        if not held or kept.problem is not None:
            return kept  # held: another round is at work on this trail
        return _round(
            client,
            agent_id,
            anchor,
            kept.checkpoint,
            resign=signer != anchor.kid,
            retention=retention,
            archive=archive,
            limits=limits,
            now=now,
        )


@contextlib.contextmanager
def holding_trail(client: redis.Redis, agent_id: str, *, wait: float = 0) -> Iterator[bool]:
    """Hold ``agent_id``'s trail, so that no round of the keeper cuts it meanwhile: whether it
    was free (or became free within ``wait`` seconds). A round holds it while it runs;
    ``mas audit verify`` while it reads the trail."""
    lock, token = audit_keeper(agent_id), secrets.token_hex(8)
    deadline = time.monotonic() + wait
    held = bool(client.set(lock, token, nx=True, px=HOLD_MS))
    while not held and time.monotonic() < deadline:
        time.sleep(0.1)
        held = bool(client.set(lock, token, nx=True, px=HOLD_MS))
    try:
        yield held
    finally:
        if held and client.get(lock) == token.encode():
            client.delete(lock)


def _stored(client: redis.Redis, agent_id: str) -> tuple[Kept, str | None]:
    """The trail's last checkpoint as stored (or why it cannot be used), and the id of the
    key that signed it."""
    raw = client.get(audit_checkpoint(agent_id))
    if raw is None:
        return Kept(None), None
    try:
        checkpoint, kid = parse_checkpoint(raw, None)
    except CheckpointError as exc:
        return Kept(None, f"the stored checkpoint is unusable: {exc}"), None
    return Kept(checkpoint), kid


def _round(
    client: redis.Redis,
    agent_id: str,
    anchor: Anchor,
    previous: Checkpoint | None,
    *,
    resign: bool,
    retention: AuditRetention | None,
    archive: Path | None,
    limits: Limits,
    now: int,
) -> Kept:
    stream, key = AgentKeys(agent_id).audit, audit_checkpoint(agent_id)
    if not client.exists(stream):
        gone = None if previous is None else f"the audit stream is gone ({previous.label})"
        return Kept(previous, gone)
    cut = previous.cut if previous else START
    info = client.xinfo_stream(stream)
    removed = removal_problem(int(info["entries-added"]) - int(info["length"]), cut)
    if removed is not None:
        return Kept(previous, removed)
    head, problem = _follow(
        client, stream, previous.head if previous else START, cut=cut, info=info, limits=limits
    )
    if problem is not None:
        return Kept(previous, problem)
    if previous is None:
        checkpoint = Checkpoint(agent_id, secrets.token_hex(8), 1, now, head, START)
    elif head != previous.head:
        checkpoint = previous.following(head=head, cut=cut, now_ms=now)
    else:
        checkpoint = previous
    unsaved = checkpoint is not previous or resign  # resign: signed by another anchor
    archived = 0
    while retention is not None and archive is not None and archived < limits.read:
        due = _due(client, stream, checkpoint, retention=retention, limits=limits, now_ms=now)
        if len(due) < cut_batch(retention, limits):
            break
        follower = Follower(checkpoint.cut)
        for raw_id, fields in due:
            follower.feed(raw_id, fields)
        if follower.problems:
            return Kept(previous, follower.problems[0], archived)
        after = checkpoint.cut.at
        checkpoint = checkpoint.following(head=checkpoint.head, cut=follower.mark(), now_ms=now)
        signed = checkpoint.sign(anchor)
        write_segment(trail_directory(archive, agent_id, checkpoint.trail), after, due, signed)
        cut_id = checkpoint.cut.at
        with client.pipeline(transaction=True) as pipe:
            pipe.set(key, signed)
            pipe.xtrim(stream, minid=f"{cut_id[0]}-{cut_id[1] + 1}", approximate=False)
            pipe.execute()
        previous, unsaved = checkpoint, False
        archived += len(due)
    if unsaved:
        client.set(key, checkpoint.sign(anchor))
    return Kept(checkpoint, None, archived)


def _follow(
    client: redis.Redis,
    stream: str,
    head: Mark,
    *,
    cut: Mark,
    info: dict[str, Any],
    limits: Limits,
) -> tuple[Mark, str | None]:
    """The trail's new head after the entries added since ``head``, or the first problem
    found; ``info`` is the stream's ``XINFO STREAM``, taken before the entries are read, and
    ``cut`` where the stream begins."""
    follower = Follower(head)
    newest = parse_id(info["last-generated-id"])
    for raw_id, fields in read_entries(client, stream, after=head.at, upto=newest):
        follower.feed(raw_id, fields)
        if follower.problems:
            return head, follower.problems[0]
        if follower.fed >= limits.read:
            return follower.mark(), None  # the rest next round; the count is checked then
    mark = follower.mark()
    held, counted = int(info["length"]), mark.total - cut.total
    if held != counted:
        return head, (
            f"the stream holds {held} entries up to {format_id(newest)} where the chains count "
            f"{counted} since the cut at {format_id(cut.at)}: entries were removed or added"
        )
    return mark, None


def cut_batch(retention: AuditRetention, limits: Limits) -> int:
    """The fewest entries a cut takes under ``retention``."""
    if retention.entries is None:
        return limits.batch
    return max(1, min(limits.batch, retention.entries // 10))


def _due(
    client: redis.Redis,
    stream: str,
    checkpoint: Checkpoint,
    *,
    retention: AuditRetention,
    limits: Limits,
    now_ms: int,
) -> list[Entry]:
    """The checkpointed entries just after the cut that ``retention`` no longer keeps in
    Redis (one segment at most): beyond its number of entries, or older than its age."""
    excess = 0
    if retention.entries is not None:
        excess = checkpoint.head.total - checkpoint.cut.total - retention.entries
    if retention.seconds is None and excess < cut_batch(retention, limits):
        return []
    oldest = now_ms - retention.seconds * 1000 if retention.seconds is not None else 0
    due: list[Entry] = []
    entries = read_entries(client, stream, after=checkpoint.cut.at, upto=checkpoint.head.at)
    for raw_id, fields in entries:
        if len(due) >= limits.segment or (len(due) >= excess and parse_id(raw_id)[0] >= oldest):
            break
        due.append((raw_id, fields))
    return due
