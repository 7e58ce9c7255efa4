"""The Redis key schema. Every per-agent key carries the agent id as a hash tag.

``mas:{<namespace>/<name>}:<kind>`` puts all of one agent's keys in one Redis Cluster slot, so
multi-key transactions and scripts over them work on a cluster as on a single server. Keys
shared by all agents (the registry) carry their own fixed tag.

    mas:{ns/name}:inbox            stream: messages to the agent, consumer group CONSUMER_GROUP
    mas:{ns/name}:dlq              stream: dead letters (envelope + reason)
    mas:{ns/name}:state            hash: ``doc`` (JSON) and ``rev`` (integer)
    mas:{ns/name}:replies:<replica> stream: replies awaited synchronously by one replica
    mas:{ns/name}:audit            stream: hash-chained audit entries of the agent's sidecars
    mas:{ns/name}:audit-heads      hash: replica -> "<seq>:<hash>" of its chain's last entry
    mas:{ns/name}:metadata         string: JSON object the agent publishes in discovery
    mas:{registry}:agents          hash: agent id -> JSON {capabilities, roles} (control plane)
    mas:{registry}:leases          sorted set: agent id -> liveness deadline (ms)
    mas:{policy}:document          string: the compiled gateway policy (JSON)
    mas:{policy}:revision          string: its revision (sidecars poll this)
    mas:{policy}:enforcers         hash: "<agent id>/<replica>" -> revision it enforces

Used by the sidecar, local mode and (later) the operator's ACL builder.
"""

from __future__ import annotations

from dataclasses import dataclass

CONSUMER_GROUP = "mas"
REGISTRY_AGENTS = "mas:{registry}:agents"
REGISTRY_LEASES = "mas:{registry}:leases"
POLICY_DOCUMENT = "mas:{policy}:document"
POLICY_REVISION = "mas:{policy}:revision"
POLICY_ENFORCERS = "mas:{policy}:enforcers"


@dataclass(frozen=True)
class AgentKeys:
    """The keys of one agent, by full agent id."""

    agent_id: str

    @property
    def prefix(self) -> str:
        """Prefix shared by every key of the agent (the ACL key pattern is ``prefix*``)."""
        return f"mas:{{{self.agent_id}}}:"

    @property
    def inbox(self) -> str:
        return f"{self.prefix}inbox"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}dlq"

    @property
    def state(self) -> str:
        return f"{self.prefix}state"

    @property
    def audit(self) -> str:
        return f"{self.prefix}audit"

    @property
    def audit_heads(self) -> str:
        return f"{self.prefix}audit-heads"

    @property
    def metadata(self) -> str:
        return f"{self.prefix}metadata"

    def replies(self, replica: str) -> str:
        return f"{self.prefix}replies:{replica}"
