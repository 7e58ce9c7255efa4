"""The rounds of the audit keeper that pass over trails nothing was added to.

The operator runs a round per Agent on a timer (:func:`mas_operator.handlers.keep_audit`); a
full round (:func:`mas_control.audit_keeper.keep_trail`) takes the trail's lock, reads its
checkpoint, asks ``XINFO STREAM``, reads the entries since the checkpoint and lets go: about
seven commands per agent and round, whether the agent did anything or not. :class:`TrailRounds`
first asks the trail's newest entry (one command, :func:`~mas_control.audit_keeper.trail_heads`)
and answers what the last full round found when that entry is the one it saw then and its
checkpoint covered, the round was given the same anchor, retention and archive, found no
problem and archived nothing (an archiving round may have left entries for the next one, and a
round that found the trail held by another, or read only part of a long backlog, does not
count). A sidecar can only append to its trail, and an append that trims adds an entry, so a
trail whose newest entry did not change has nothing new to checkpoint; every ``every``-th round
of a trail is a full one all the same, as ``mas up``'s rounds are
(:mod:`mas_cli.local.supervisor`). Thread-safe: kopf runs the timers of different agents in
threads of its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import redis

from mas_control.audit_keeper import Kept, keep_trail, trail_heads
from mas_core.audit.chain import format_id
from mas_core.identity.credentials import Anchor
from mas_core.policy.document import AuditRetention

UNCHANGED_ROUNDS = 30  # a trail nothing was added to still gets a full round this often


@dataclass(frozen=True)
class _Seen:
    """What the last full round of a trail saw and found, and the rounds passed over since."""

    head: bytes | None
    settings: tuple[object, ...]
    kept: Kept
    passed: int = 0


class TrailRounds:
    """The rounds of the audit keeper for trails kept one at a time."""

    def __init__(self, every: int = UNCHANGED_ROUNDS) -> None:
        self.every = every
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def keep(
        self,
        client: redis.Redis,
        agent_id: str,
        anchor: Anchor,
        *,
        retention: AuditRetention | None,
        archive: Path | None,
    ) -> Kept:
        """A round for ``agent_id``'s trail: what the last full round found when nothing was
        added since (see the module docstring), a full round otherwise."""
        head = trail_heads(client, [agent_id])[agent_id]
        settings = (anchor.kid, retention, archive)
        with self._lock:
            seen = self._seen.get(agent_id)
            if seen is not None and self._unchanged(seen, head, settings):
                self._seen[agent_id] = _Seen(head, settings, seen.kept, seen.passed + 1)
                return seen.kept
        kept = keep_trail(client, agent_id, anchor, retention=retention, archive=archive)
        covered = (
            kept.checkpoint is not None
            and format_id(kept.checkpoint.head.at) == (head or b"").decode()
        )
        with self._lock:
            if head is None or covered:
                self._seen[agent_id] = _Seen(head, settings, kept)
            else:  # the round stopped short of the newest entry, or another one held the trail
                self._seen.pop(agent_id, None)
        return kept

    def forget(self, agent_id: str) -> None:
        """Drop what the rounds saw of a deleted agent's trail."""
        with self._lock:
            self._seen.pop(agent_id, None)

    def _unchanged(self, seen: _Seen, head: bytes | None, settings: tuple[object, ...]) -> bool:
        return (
            seen.head == head
            and seen.settings == settings
            and seen.kept.problem is None
            and seen.kept.archived == 0
            and seen.passed + 1 < self.every
        )
