"""The dashboard's write actions: replay or delete a dead letter, each one audited.

Only when the dashboard runs with write actions on (its ACL user then has the dead-letter
rights of :func:`mas_core.acl.dashboard_acl_rules`). A replay appends the dead letter's original
entry to its sender's stream as the replay guard's entry of record and removes the dead letter,
in one call of the control plane's ``mas_seen_requeue`` function, as the agent's own sidecar
does; the message keeps its sender's signature and identity token, which its receiver checks
again. Every action, done or refused, is appended to the dashboard's own hash-chained trail
(:data:`mas_core.keys.DASHBOARD_AUDIT`, one :class:`~mas_core.audit.chain.Chain`), with who asked
(the client's address) and never a payload.

Synchronous (redis-py), called by :mod:`mas_dashboard.server` in a thread.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import redis

from mas_core.audit.chain import Chain
from mas_core.dead_letters import DL_SENDER, original_fields, parse_dead_letter
from mas_core.keys import DASHBOARD_AUDIT, DASHBOARD_AUDIT_HEADS, AgentKeys
from mas_core.names import InvalidAgentIdError, qualify

REPLICA = "dashboard"  # the dashboard's one chain in its trail
REPLAY_WINDOW_MS = 86_400_000  # how long the replay guard remembers a replayed message's id
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


class ActionError(Exception):
    """An action that cannot be done: ``code`` (stable, machine-readable) and a message."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Done:
    """What an action did: the dead letter, and the replayed message's id (None: deleted)."""

    dead_letter: str
    message_id: str | None


def _fields(client: redis.Redis, agent_id: str, dead_letter_id: str) -> dict[bytes, bytes]:
    if _STREAM_ID.match(dead_letter_id):
        entries = client.xrange(AgentKeys(agent_id).dlq, dead_letter_id, dead_letter_id)
        if entries:
            return dict(entries[0][1])
    raise ActionError(
        "dead_letter_not_found", f"{agent_id} has no dead letter {dead_letter_id[:64]!r}", 404
    )


def _agent(agent_id: str) -> str:
    try:
        return qualify(agent_id)
    except InvalidAgentIdError as exc:
        raise ActionError("invalid_agent", str(exc), 400) from None


def replay(client: redis.Redis, agent_id: str, dead_letter_id: str) -> Done:
    """Put the dead letter back in its sender's stream (see the module docstring)."""
    agent_id = _agent(agent_id)
    fields = _fields(client, agent_id, dead_letter_id)
    dead = parse_dead_letter(dead_letter_id.encode(), fields)
    sender = fields.get(DL_SENDER, b"").decode() or (dead.envelope.sender if dead.envelope else "")
    if dead.envelope is None or not sender:
        raise ActionError(
            "dead_letter_unreplayable",
            f"dead letter {dead_letter_id} holds no valid message or names no sender; it can "
            "only be deleted",
            409,
        )
    keys = AgentKeys(agent_id)
    stream = keys.inbox(sender)
    names = [stream, keys.dlq, keys.seen, keys.seen_by_time, keys.senders]
    pairs = [part for item in original_fields(fields).items() for part in item]
    client.fcall(
        "mas_seen_requeue", len(names), *names, dead.envelope.id, dead_letter_id,
        REPLAY_WINDOW_MS, sender, keys.name_of(stream), *pairs,
    )  # fmt: skip
    return Done(dead_letter_id, dead.envelope.id)


def delete(client: redis.Redis, agent_id: str, dead_letter_id: str) -> Done:
    """Drop the dead letter."""
    agent_id = _agent(agent_id)
    if not _STREAM_ID.match(dead_letter_id) or not client.xdel(
        AgentKeys(agent_id).dlq, dead_letter_id
    ):
        raise ActionError(
            "dead_letter_not_found", f"{agent_id} has no dead letter {dead_letter_id[:64]!r}", 404
        )
    return Done(dead_letter_id, None)


def audit(client: redis.Redis, event: dict[str, Any]) -> None:
    """Append ``event`` (with the time) to the dashboard's trail and move its head, in one
    transaction."""
    chain = Chain.resume(REPLICA, client.hget(DASHBOARD_AUDIT_HEADS, REPLICA))
    fields = chain.append({"at": time.time_ns() // 1_000_000, **event})
    with client.pipeline(transaction=True) as pipe:
        pipe.xadd(DASHBOARD_AUDIT, fields)
        pipe.hset(DASHBOARD_AUDIT_HEADS, REPLICA, chain.head_value)
        pipe.execute()
