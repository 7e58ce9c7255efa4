"""Everything the dashboard shows, read from Redis in one pass: :func:`read_snapshot`.

Reads with the dashboard's read-only user (:func:`mas_core.acl.dashboard_acl_rules`): the
registry and the leases, the policy and who enforces it, and per agent its inbox streams'
counts (never their entries), its dead letters, the newest entries of its audit trail and the
verdict on the whole trail. Trails are verified with the same check ``mas audit verify`` runs
(:func:`mas_control.trail_check.check_trail`), once per change of the trail (:class:`Verdicts`
remembers the verdict while the newest entry, the count of removed entries and the checkpoint
stay the same). The dashboard cannot hold a trail while it reads it, so a cut of the control
plane during a read (the count of removed entries changed) makes it read again.

Synchronous (redis-py); the server runs it in a thread. The only module of the dashboard
that reads Redis; :mod:`mas_dashboard.views` builds the pages from what it returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import redis

from mas_control.provision import enforcers
from mas_control.trail_check import check_trail, removed_entries
from mas_core.audit.chain import Entry
from mas_core.dead_letters import DeadLetter, parse_dead_letter
from mas_core.keys import (
    POLICY_DOCUMENT,
    POLICY_REVISION,
    REGISTRY_AGENTS,
    REGISTRY_LEASES,
    AgentKeys,
    audit_checkpoint,
)

RECENT_ENTRIES = 500  # audit entries per agent the feed, the rates and the graph look at
DEAD_LETTERS_SHOWN = 200  # dead letters per agent
_SEQ = re.compile(r"#(\d+)")
_CHECK_ATTEMPTS = 3  # reads of a trail a cut may spoil before the verdict says so


@dataclass(frozen=True)
class InboxStream:
    """One sender's stream into an agent: entries in it, how many of them are delivered and
    not acked, and the id (ms) of the oldest of those (None: none pending)."""

    sender: str
    length: int
    pending: int
    oldest_pending_ms: int | None


@dataclass(frozen=True)
class ChainVerdict:
    """What the trail check found: intact, or the first problem and the chain position (``#N``)
    it names; how many entries it checked."""

    intact: bool
    entries: int
    problem: str | None = None
    broken_at: int | None = None


@dataclass(frozen=True)
class AgentData:
    """What Redis holds about one agent (registry entry raw, None when not registered)."""

    agent_id: str
    registered: bytes | None
    lease_deadline_ms: float | None
    inbox: list[InboxStream]
    recent_audit: list[Entry]  # oldest first
    dead_letters: list[DeadLetter]
    chain: ChainVerdict


@dataclass(frozen=True)
class Snapshot:
    """Everything the pages show, as read at ``now_ms``."""

    now_ms: int
    agents: list[AgentData]
    policy_document: bytes | None
    policy_revision: str | None
    enforcers: dict[str, str]  # "agent/replica" -> the revision it enforces


@dataclass
class Verdicts:
    """The last verdict on each trail, with what it was taken on; a trail is checked again
    only when its newest entry, its removed count or its checkpoint changed."""

    known: dict[str, tuple[tuple[object, ...], ChainVerdict]] = field(default_factory=dict)

    def verdict(self, client: redis.Redis, agent_id: str) -> ChainVerdict:
        state = _trail_state(client, agent_id)
        remembered = self.known.get(agent_id)
        if remembered is not None and remembered[0] == state:
            return remembered[1]
        verdict = check(client, agent_id)
        self.known[agent_id] = (_trail_state(client, agent_id), verdict)
        return verdict


def _trail_state(client: redis.Redis, agent_id: str) -> tuple[object, ...]:
    newest = client.xrevrange(AgentKeys(agent_id).audit, count=1)
    return (
        newest[0][0] if newest else None,
        removed_entries(client, agent_id),
        client.get(audit_checkpoint(agent_id)),
    )


def check(client: redis.Redis, agent_id: str) -> ChainVerdict:
    """The verdict of :func:`~mas_control.trail_check.check_trail` on ``agent_id``'s trail,
    read again when the control plane cut the trail during the read."""
    for _ in range(_CHECK_ATTEMPTS):
        before = removed_entries(client, agent_id)
        checked = check_trail(client, agent_id)
        if removed_entries(client, agent_id) == before:
            break
    if not checked.problems:
        return ChainVerdict(True, checked.entries)
    problem = checked.problems[0]
    seq = _SEQ.search(problem)
    return ChainVerdict(False, checked.entries, problem, int(seq.group(1)) if seq else None)


def _inbox(client: redis.Redis, agent_id: str) -> list[InboxStream]:
    keys = AgentKeys(agent_id)
    senders = sorted(s.decode() for s in client.smembers(keys.senders))
    streams = []
    for sender in senders:
        stream = keys.inbox(sender)
        length = int(client.xlen(stream))
        pending, oldest = 0, None
        if length:
            try:
                summary = client.xpending(stream, "mas")
            except redis.ResponseError:  # no consumer group yet: nothing delivered
                summary = {"pending": 0}
            pending = int(summary["pending"])
            if pending:
                oldest = int(str(summary["min"].decode()).partition("-")[0])
        streams.append(InboxStream(sender, length, pending, oldest))
    return streams


def read_agent(
    client: redis.Redis,
    agent_id: str,
    verdicts: Verdicts,
    registered: bytes | None,
    lease: float | None,
) -> AgentData:
    """What Redis holds about ``agent_id``."""
    keys = AgentKeys(agent_id)
    recent = list(reversed(client.xrevrange(keys.audit, count=RECENT_ENTRIES)))
    dead = [
        parse_dead_letter(entry_id, fields)
        for entry_id, fields in client.xrange(keys.dlq, count=DEAD_LETTERS_SHOWN)
    ]
    return AgentData(
        agent_id=agent_id,
        registered=registered,
        lease_deadline_ms=lease,
        inbox=_inbox(client, agent_id),
        recent_audit=recent,
        dead_letters=dead,
        chain=verdicts.verdict(client, agent_id),
    )


def read_snapshot(client: redis.Redis, verdicts: Verdicts, now_ms: int) -> Snapshot:
    """Everything the pages show (see the module docstring)."""
    registry = {k.decode(): v for k, v in client.hgetall(REGISTRY_AGENTS).items()}
    leases = {
        k.decode(): float(v) for k, v in client.zrange(REGISTRY_LEASES, 0, -1, withscores=True)
    }
    revision = client.get(POLICY_REVISION)
    return Snapshot(
        now_ms=now_ms,
        agents=[
            read_agent(client, agent_id, verdicts, registry.get(agent_id), leases.get(agent_id))
            for agent_id in sorted(set(registry) | set(leases))
        ],
        policy_document=client.get(POLICY_DOCUMENT),
        policy_revision=revision.decode() if revision is not None else None,
        enforcers=enforcers(client),
    )
