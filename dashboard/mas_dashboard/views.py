"""The dashboard's pages as documents, built from a :class:`~mas_dashboard.reading.Snapshot`.

Pure: each builder takes what :mod:`mas_dashboard.reading` read and returns plain data (JSON
for the browser, rows for ``mas status``). Nothing here ever copies a payload: an audit event
gives its decision, parties, type, rule, detectors and reason; a dead letter its envelope's
id, sender and type.

* :func:`decisions`: the gateway decisions of every trail, newest first, each of a
  :data:`KINDS` kind (an accepted message with a DLP redaction is ``redacted``; a message its
  receiver refused as unauthenticated is ``unauthenticated``);
* :func:`agent_rows`: one row per agent (replicas live, capabilities, roles, revisions
  enforced, inbox backlog, oldest pending age, messages per second in and out, refusals per
  second and dead letters, over the last :data:`RATE_WINDOW_MS`);
* :func:`graph`: agents and who sent to whom, each edge with its recent rate, its count of
  accepted and refused messages;
* :func:`dead_letter_rows`, :func:`policy_rows`, :func:`page`: the rest, and all of it.

Used by :mod:`mas_dashboard.server` and ``mas status`` (:mod:`mas_cli.status_command`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from mas_core.audit.chain import F_EVENT, Entry
from mas_core.policy.document import CompiledPolicy
from mas_core.policy.rules import glob_match
from mas_core.registry_entries import parse_entry
from mas_dashboard.reading import AgentData, Snapshot

RATE_WINDOW_MS = 60_000  # rates are over the last minute
FEED_SIZE = 300  # decisions the feed shows
KINDS = (
    "accepted",
    "redacted",
    "denied",
    "rate_limited",
    "dlp_blocked",
    "unauthenticated",
    "refused_on_receive",
    "circuit_open",
    "unsigned",
    "credentials_expired",
    "received",
)
REFUSALS = frozenset(KINDS) - {"accepted", "redacted", "received"}


@dataclass(frozen=True)
class Decision:
    """One gateway decision from an agent's audit trail (never its payload)."""

    at: int  # ms
    trail: str  # the agent whose sidecar decided
    kind: str
    sender: str
    target: str
    type: str
    message_id: str
    count: int = 1  # messages (a ``received`` entry covers a batch)
    rule: str | None = None
    detectors: tuple[str, ...] = ()
    reason: str | None = None


def _kind(event: Mapping[str, Any]) -> str:
    decision = str(event.get("decision", ""))
    if decision == "accepted" and any(
        f.get("action") == "redact" for f in event.get("dlp", ()) if isinstance(f, dict)
    ):
        return "redacted"
    if decision == "refused_on_receive" and str(event.get("reason", "")).startswith(
        "unauthenticated"
    ):
        return "unauthenticated"
    return decision


def decision_of(trail: str, entry: Entry) -> Decision | None:
    """The decision an audit entry records; None for entries that record none (metadata
    published) or that cannot be read (the trail check reports those)."""
    try:
        event = orjson.loads(entry[1][F_EVENT])
    except (KeyError, orjson.JSONDecodeError):
        return None
    if not isinstance(event, dict) or "decision" not in event:
        return None
    kind = _kind(event)
    if kind not in KINDS:
        return None
    messages = event.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else event
    findings = [f for f in event.get("dlp", ()) if isinstance(f, dict)]
    return Decision(
        at=int(event.get("at", 0)),
        trail=trail,
        kind=kind,
        sender=str(first.get("from", "")),
        target=str(event.get("to", "")),
        type=str(first.get("type", "")),
        message_id=str(first.get("message_id", "")),
        count=len(messages) if isinstance(messages, list) else 1,
        rule=str(event["rule"]) if event.get("rule") else None,
        detectors=tuple(sorted({str(f.get("detector", "")) for f in findings})),
        reason=str(event["reason"]) if event.get("reason") else None,
    )


def _decisions_of(agent: AgentData) -> list[Decision]:
    return [d for e in agent.recent_audit if (d := decision_of(agent.agent_id, e)) is not None]


def decisions(snapshot: Snapshot, limit: int = FEED_SIZE) -> list[Decision]:
    """The newest ``limit`` decisions of every trail, newest first."""
    every = [d for agent in snapshot.agents for d in _decisions_of(agent)]
    return sorted(every, key=lambda d: (d.at, d.trail), reverse=True)[:limit]


@dataclass(frozen=True)
class AgentRow:
    """One agent on the agents page (rates per second over :data:`RATE_WINDOW_MS`)."""

    id: str
    replicas_live: int
    capabilities: tuple[str, ...]
    roles: tuple[str, ...]
    policy_revisions: tuple[str, ...]
    backlog: int
    oldest_pending_s: float | None
    in_per_s: float
    out_per_s: float
    refusals_per_s: float
    dead_letters: int
    audit_intact: bool
    audit_problem: str | None
    audit_broken_at: int | None


def _replicas(snapshot: Snapshot, agent_id: str) -> dict[str, str]:
    """``replica -> revision`` of the agent's replicas that report one."""
    found = {}
    for key, revision in snapshot.enforcers.items():
        owner, _, replica = key.rpartition("/")
        if owner == agent_id:
            found[replica] = revision
    return found


def agent_row(snapshot: Snapshot, agent: AgentData) -> AgentRow:
    entry = parse_entry(agent.registered) if agent.registered is not None else None
    live = agent.lease_deadline_ms is not None and agent.lease_deadline_ms > snapshot.now_ms
    replicas = _replicas(snapshot, agent.agent_id)
    since = snapshot.now_ms - RATE_WINDOW_MS
    recent = [d for d in _decisions_of(agent) if d.at > since]
    sent = sum(d.count for d in recent if d.kind in ("accepted", "redacted"))
    received = sum(d.count for d in recent if d.kind == "received")
    refused = sum(d.count for d in recent if d.kind in REFUSALS)
    pending = [s.oldest_pending_ms for s in agent.inbox if s.oldest_pending_ms is not None]
    window = RATE_WINDOW_MS / 1000
    return AgentRow(
        id=agent.agent_id,
        replicas_live=len(replicas) if live else 0,
        capabilities=entry.capabilities if entry else (),
        roles=entry.roles if entry else (),
        policy_revisions=tuple(sorted(set(replicas.values()))),
        backlog=sum(s.length for s in agent.inbox),
        oldest_pending_s=max(0, snapshot.now_ms - min(pending)) / 1000 if pending else None,
        in_per_s=received / window,
        out_per_s=sent / window,
        refusals_per_s=refused / window,
        dead_letters=len(agent.dead_letters),
        audit_intact=agent.chain.intact,
        audit_problem=agent.chain.problem,
        audit_broken_at=agent.chain.broken_at,
    )


def agent_rows(snapshot: Snapshot) -> list[AgentRow]:
    return [agent_row(snapshot, agent) for agent in snapshot.agents]


def graph(snapshot: Snapshot) -> dict[str, Any]:
    """``{nodes: [id], edges: [{from, to, rate, accepted, refused}]}``: each message a sender's
    own trail decided on (its own sends), rate over :data:`RATE_WINDOW_MS`."""
    since = snapshot.now_ms - RATE_WINDOW_MS
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    for agent in snapshot.agents:
        for d in _decisions_of(agent):
            if d.kind == "received" or d.sender != agent.agent_id or not d.target:
                continue
            edge = edges.setdefault(
                (d.sender, d.target),
                {"from": d.sender, "to": d.target, "rate": 0.0, "accepted": 0, "refused": 0},
            )
            if d.kind in REFUSALS:
                edge["refused"] += d.count
            else:
                edge["accepted"] += d.count
                if d.at > since:
                    edge["rate"] += d.count / (RATE_WINDOW_MS / 1000)
    nodes = sorted({a.agent_id for a in snapshot.agents} | {e["to"] for e in edges.values()})
    return {"nodes": nodes, "edges": [edges[k] for k in sorted(edges)]}


def dead_letter_rows(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Every dead letter read, per agent, oldest first (id, sender, type, reason, attempts)."""
    return [
        {
            "agent": agent.agent_id,
            "id": dl.id,
            "sender": dl.sender or (dl.envelope.sender if dl.envelope else None),
            "type": dl.envelope.type if dl.envelope else None,
            "message_id": dl.envelope.id if dl.envelope else None,
            "reason": dl.reason,
            "attempts": dl.attempts,
            "failed_at": dl.failed_at,
        }
        for agent in snapshot.agents
        for dl in agent.dead_letters
    ]


def policy_rows(snapshot: Snapshot) -> dict[str, Any]:
    """The compiled revision, and per GatewayPolicy the agents it selects, the replicas that
    enforce this revision and those still on another, and its status."""
    document = (
        CompiledPolicy.model_validate_json(snapshot.policy_document)
        if snapshot.policy_document
        else CompiledPolicy(revision=snapshot.policy_revision or "")
    )
    agents = [a.agent_id for a in snapshot.agents]
    policies = []
    for entry in document.policies:
        selected = [a for a in agents if glob_match(entry.spec.agents, a)]
        enforcing: list[str] = []
        behind: list[str] = []
        for agent_id in selected:
            for replica, revision in sorted(_replicas(snapshot, agent_id).items()):
                name = f"{agent_id}/{replica}"
                (enforcing if revision == document.revision else behind).append(name)
        status = "applied" if not behind and enforcing else "pending" if behind else "idle"
        policies.append(
            {
                "name": entry.name,
                "agents": selected,
                "enforcing": enforcing,
                "behind": behind,
                "status": status,
                "rules": len(entry.spec.rules),
            }
        )
    return {"revision": document.revision, "policies": policies}


def _plain(rows: Iterable[Any]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


def page(snapshot: Snapshot) -> dict[str, Any]:
    """Everything the browser shows, as one JSON-ready document."""
    return {
        "now": snapshot.now_ms,
        "agents": _plain(agent_rows(snapshot)),
        "graph": graph(snapshot),
        "decisions": _plain(decisions(snapshot)),
        "dead_letters": dead_letter_rows(snapshot),
        "policies": policy_rows(snapshot),
    }
