"""Prometheus metrics of the operator, in a registry of its own.

Labels come from fixed sets (resource kind, outcome), except the per-agent gauges, one series
per Agent (labels ``agent_namespace`` and ``agent``, its name: a label value cannot hold the
``/`` of an agent id, and Prometheus keeps ``namespace`` for the scraped pod's), which the
handlers remove when the Agent goes:
as many series as Agents, for autoscalers (a KEDA ``ScaledObject`` or an HPA on an external
metric) to scale each Agent on its own backlog through one scrape target, the operator.

What is a fact about an agent as a whole, kept in Redis (its inbox backlog and oldest message,
its dead letters, its audit trail, whether every replica enforces the policy), is exported here,
once per Agent; the sidecars export what each replica does (messages sent, delivered, refused,
latencies), so summing over their pods never counts an agent's backlog twice. Served by
:mod:`mas_operator.run` on ``MAS_METRICS_PORT``; counted and set by the handlers.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class OperatorMetrics:
    """The operator's collectors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            "mas_operator_reconciles",
            "Reconciles of Agents and GatewayPolicies by outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self.token_renewals = Counter(
            "mas_operator_token_renewals", "Identity tokens issued or renewed", registry=r
        )
        self.policy_publishes = Counter(
            "mas_operator_policy_publishes", "New policy revisions published", registry=r
        )
        self.invalid_policies = Gauge(
            "mas_operator_invalid_policies", "GatewayPolicies that fail validation", registry=r
        )
        self.audit_rounds = Counter(
            "mas_operator_audit_rounds",
            "Rounds of the audit keeper by outcome (intact, tampered, archive_failed)",
            ["outcome"],
            registry=r,
        )
        self.audit_archived = Counter(
            "mas_operator_audit_archived_entries",
            "Audit entries archived, then trimmed from Redis",
            registry=r,
        )
        self.redis_errors = Counter(
            "mas_operator_redis_errors", "Failed administrative Redis operations", registry=r
        )
        self.inbox_messages = Gauge(
            "mas_agent_inbox_messages",
            "Messages to the agent not yet acked (waiting or leased), at the operator's last look",
            ["agent_namespace", "agent"],
            registry=r,
        )
        self.inbox_pending = Gauge(
            "mas_agent_inbox_pending",
            "Of those, messages leased to a replica and not yet acked",
            ["agent_namespace", "agent"],
            registry=r,
        )
        self.inbox_oldest_age = Gauge(
            "mas_agent_inbox_oldest_age_seconds",
            "Age of the oldest message to the agent not yet acked; 0 when none",
            ["agent_namespace", "agent"],
            registry=r,
        )
        self.dead_letters = Gauge(
            "mas_agent_dead_letters",
            "Messages in the agent's dead-letter stream, at the operator's last look",
            ["agent_namespace", "agent"],
            registry=r,
        )
        self.policy_applied = Gauge(
            "mas_agent_policy_applied",
            "1 when every replica of the agent enforces the published policy revision, else 0",
            ["agent_namespace", "agent"],
            registry=r,
        )
        self.audit_intact = Gauge(
            "mas_agent_audit_intact",
            "1 when the agent's audit trail verified intact at the last checkpoint, else 0",
            ["agent_namespace", "agent"],
            registry=r,
        )
        self.redis_recoveries = Counter(
            "mas_operator_redis_recoveries",
            "Times a restarted or replaced Redis was provisioned again",
            registry=r,
        )

    def inbox(self, agent_id: str, *, messages: int, pending: int, oldest_age: int) -> None:
        """Set the inbox gauges of ``agent_id`` (``namespace/name``)."""
        labels = agent_id.split("/", 1)
        self.inbox_messages.labels(*labels).set(messages)
        self.inbox_pending.labels(*labels).set(pending)
        self.inbox_oldest_age.labels(*labels).set(oldest_age)

    def agent_gauge(self, gauge: Gauge, agent_id: str, value: float) -> None:
        """Set one of the per-agent gauges of ``agent_id`` (``namespace/name``)."""
        gauge.labels(*agent_id.split("/", 1)).set(value)

    def forget_agent(self, agent_id: str) -> None:
        """Remove the series of a deleted agent."""
        labels = agent_id.split("/", 1)
        per_agent = (
            self.inbox_messages, self.inbox_pending, self.inbox_oldest_age, self.dead_letters,
            self.policy_applied, self.audit_intact,
        )  # fmt: skip
        for gauge in per_agent:
            try:
                gauge.remove(*labels)
            except KeyError:
                continue
