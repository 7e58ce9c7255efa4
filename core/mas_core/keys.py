"""The Redis key schema. Every per-agent key carries the agent id as a hash tag.

``mas:{<namespace>/<name>}:<kind>`` puts all of one agent's keys in one Redis Cluster slot, so
multi-key transactions and scripts over them work on a cluster as on a single server. Keys
shared by all agents (the registry) carry their own fixed tag.

    mas:{ns/name}:in:<sender>      stream: messages from one sender (its full id) to the agent,
                                   consumer group CONSUMER_GROUP; only that sender writes it
    mas:{ns/name}:senders          set: the agents that have written to the agent (each sender
                                   adds itself)
    mas:{ns/name}:ring             stream: content-free entries a sender appends when it adds
                                   itself to ``senders``, so that a replica looks at once
                                   (consumer group CONSUMER_GROUP)
    mas:{ns/name}:dlq              stream: dead letters (envelope + reason + sender stream)
    mas:{ns/name}:state            hash: ``doc`` (JSON) and ``rev`` (integer)
    mas:{ns/name}:completed:<id>   string with an expiry: the agent handled message ``id``
                                   (idempotent handlers record it before they ack)
    mas:{ns/name}:replies:<replica>:<sender>  stream: replies from one sender to requests of
                                   one replica; only that sender writes it, the replica
                                   creates it and sets its expiry
    mas:{ns/name}:replies:<replica>  stream: the replica's own bell that wakes its reply reader
    mas:{ns/name}:audit            stream: hash-chained audit entries of the agent's sidecars
    mas:{ns/name}:audit-heads      hash: replica -> "<seq>:<hash>" of its chain's last entry
    mas:{ns/name}:seen             hash: replay guard, message id -> stream and entry of record
    mas:{ns/name}:seen-by-time     sorted set: replay guard, message id -> forget-after (ms)
    mas:{ns/name}:ratelimit:<name> hash: a token bucket shared by the agent's replicas
    mas:{ns/name}:metadata         string: JSON object the agent publishes in discovery
    mas:{registry}:agents          hash: agent id -> JSON {capabilities, roles} (control plane)
    mas:{registry}:leases          sorted set: agent id -> liveness deadline (ms)
    mas:{policy}:document          string: the compiled gateway policy (JSON)
    mas:{policy}:revision          string: its revision (sidecars read it when notified, and
                                   every few seconds in case a notice was missed)
    mas:{policy}:changes           stream: one entry per publication (its revision), capped;
                                   sidecars block on it to learn of a new policy at once
    mas:{policy}:enforcers         hash: "<agent id>/<replica>" -> revision it enforces
    mas:{dashboard}:audit          stream: the dashboard's hash-chained trail of its write actions
                                   (dead letters replayed or deleted), one chain
    mas:{dashboard}:audit-heads    hash: that chain's head, as an agent's ``audit-heads``
    mas:control:{ns/name}:audit-checkpoint  string: the last signed checkpoint of the agent's
                                   audit trail (:mod:`mas_core.audit.checkpoints`); only the control
                                   plane writes it, and no sidecar may read it either: it starts
                                   with ``mas:control:``, outside every agent's prefix, and
                                   carries the agent's hash tag, so it shares the audit
                                   stream's slot (cut and trim go in one transaction)
    mas:control:{ns/name}:audit-keeper  string: held (with an expiry) by the control plane's
                                   round on that trail, so that two never run at once

A sender's streams end with its own id (``:in:<sender>``, ``:replies:<replica>:<sender>``), so
its Redis user may write those and no other agent's (:mod:`mas_core.acl`). Agent ids are two DNS
labels joined by ``/``: no ``:``, ``{``, ``}`` or glob characters, so no key of one sender ends
like another's.

Every key of the system is built here, and every key name is read back here
(:meth:`AgentKeys.inbox_sender`, :meth:`AgentKeys.reply_sender`, :meth:`AgentKeys.name_of`).
Used by the sidecar, the control plane (:mod:`mas_control`), the ACL rules (:mod:`mas_core.acl`,
which take their key patterns from :class:`AgentKeys` built on ``*``), the operator, the ``mas``
command, the benchmarks and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

CONSUMER_GROUP = "mas"
REGISTRY_AGENTS = "mas:{registry}:agents"
REGISTRY_LEASES = "mas:{registry}:leases"
POLICY_DOCUMENT = "mas:{policy}:document"
POLICY_REVISION = "mas:{policy}:revision"
POLICY_ENFORCERS = "mas:{policy}:enforcers"
POLICY_CHANGES = "mas:{policy}:changes"
POLICY_CHANGES_KEPT = 16  # notices the changes stream keeps (a reader needs only the last)
DASHBOARD_AUDIT = "mas:{dashboard}:audit"
DASHBOARD_AUDIT_HEADS = "mas:{dashboard}:audit-heads"
INBOX = "in:"  # the kind of a sender's stream: ``<prefix>in:<sender>``


def audit_checkpoint(agent_id: str) -> str:
    """The key of the last checkpoint of ``agent_id``'s audit trail (control plane only)."""
    return f"mas:control:{{{agent_id}}}:audit-checkpoint"


def audit_keeper(agent_id: str) -> str:
    """The key a control plane's round on ``agent_id``'s audit trail holds while it runs."""
    return f"mas:control:{{{agent_id}}}:audit-keeper"


@dataclass(frozen=True)
class AgentKeys:
    """The keys of one agent, by full agent id."""

    agent_id: str

    @property
    def prefix(self) -> str:
        """Prefix shared by every key of the agent."""
        return f"mas:{{{self.agent_id}}}:"

    @property
    def every_key(self) -> str:
        """The glob pattern of every key of the agent (its ACL key pattern, a SCAN match)."""
        return f"{self.prefix}*"

    def name_of(self, key: str) -> str:
        """The name of the agent's ``key`` after its prefix (``in:<sender>`` for a stream)."""
        return key.removeprefix(self.prefix)

    def inbox(self, sender: str) -> str:
        """The stream of ``sender``'s messages to this agent."""
        return f"{self.prefix}{INBOX}{sender}"

    def inbox_sender(self, stream: str) -> str:
        """The sender whose stream to this agent ``stream`` is (the inverse of :meth:`inbox`)."""
        return stream.removeprefix(self.inbox(""))

    @property
    def senders(self) -> str:
        return f"{self.prefix}senders"

    @property
    def ring(self) -> str:
        return f"{self.prefix}ring"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}dlq"

    @property
    def state(self) -> str:
        return f"{self.prefix}state"

    def completed(self, message_id: str) -> str:
        """The record that the agent handled ``message_id`` (kept for a while, then expires)."""
        return f"{self.prefix}completed:{message_id}"

    @property
    def audit(self) -> str:
        return f"{self.prefix}audit"

    @property
    def audit_heads(self) -> str:
        return f"{self.prefix}audit-heads"

    @property
    def seen(self) -> str:
        return f"{self.prefix}seen"

    @property
    def seen_by_time(self) -> str:
        return f"{self.prefix}seen-by-time"

    @property
    def metadata(self) -> str:
        return f"{self.prefix}metadata"

    def ratelimit(self, name: str) -> str:
        return f"{self.prefix}ratelimit:{name}"

    def replies(self, replica: str, sender: str) -> str:
        """The stream of ``sender``'s replies to requests of this agent's ``replica``."""
        return f"{self.prefix}replies:{replica}:{sender}"

    def reply_sender(self, replica: str, stream: str) -> str:
        """The sender whose replies to ``replica`` ``stream`` carries (the inverse of
        :meth:`replies`)."""
        return stream.removeprefix(self.replies(replica, ""))

    def reply_bell(self, replica: str) -> str:
        """The stream that wakes ``replica``'s reply reader (only the agent writes it)."""
        return f"{self.prefix}replies:{replica}"
