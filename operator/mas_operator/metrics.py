"""Prometheus metrics of the operator, in a registry of its own.

Labels come from fixed sets (resource kind, outcome), never from agent names, so cardinality
stays bounded. Served by :mod:`mas_operator.main` on ``MAS_METRICS_PORT``; counted by the
handlers.
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
        self.redis_recoveries = Counter(
            "mas_operator_redis_recoveries",
            "Times a restarted or replaced Redis was provisioned again",
            registry=r,
        )
