"""Prometheus metrics of one sidecar, in a registry of its own (served on ``/metrics``).

Label values come from small fixed sets (route templates, outcome names, dead-letter reasons),
never from message ids, agent ids or types, so cardinality stays bounded. The names policies
give (rules, rate limits, custom DLP detectors) are labels too, but at most
:data:`MAX_NAMED_LABELS` of each: later ones are counted under :data:`OTHER`
(:class:`FoldedLabels`); a message no rule matched (default deny) counts under
:data:`NO_RULE`. Used by the HTTP middleware, the Redis Streams bridge, the gateway checks,
the registry and the delivery routes.

Facts about an agent as a whole (its inbox backlog, dead letters, audit trail, whether all
its replicas enforce the policy) are the operator's metrics (:mod:`mas_operator.metrics`), once
per Agent; these are per replica: what this sidecar sent, delivered, refused, and how long
messages took from their creation to their delivery here (``mas_delivery_latency_seconds``,
first deliveries only, by the wall clocks of both sidecars) and in the agent's handler
(``mas_handler_seconds``, as the SDK reports it with its ack).

``mas_stage_seconds{stage}`` times the stages of a message inside the sidecar, one observation
per message (a stage done for several messages at once, such as a read or the receive checks of
a batch, gives each its share of the time); see :data:`STAGES` and docs/sidecar-api.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest

if TYPE_CHECKING:
    from mas_sidecar.checks.dlp import Finding

# The stages of ``mas_stage_seconds``: where each begins and ends is in docs/sidecar-api.md.
Stage = Literal[
    "http_in", "checks", "redis_write", "redis_read", "verify", "delivery", "reply_wait"
]
STAGES: tuple[Stage, ...] = get_args(Stage)
MAX_NAMED_LABELS = 64  # distinct rule (or detector) names one label takes; more fold into OTHER
OTHER = "_other"  # never a rule or detector name (they start with a letter or digit)
NO_RULE = "_none"  # the decision no rule made: default deny
# Seconds, from a fast local hop to a message that waited minutes in the inbox.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                   60, 300)  # fmt: skip
HANDLER_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class FoldedLabels:
    """Label values taken from configuration, at most ``limit`` distinct ones; any later value
    is :data:`OTHER`, so a policy with many names (or many revisions) cannot grow the series
    without bound."""

    def __init__(self, limit: int = MAX_NAMED_LABELS) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


class Metrics:
    """The sidecar's collectors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_sent = Counter(
            "mas_messages_sent", "Messages written to a target", ["kind"], registry=r
        )
        self.deliveries = Counter(
            "mas_deliveries", "Messages handed to the agent (redeliveries included)", registry=r
        )
        self.redeliveries = Counter("mas_redeliveries", "Deliveries with attempt > 1", registry=r)
        self.acks = Counter("mas_acks", "Deliveries acknowledged by the agent", registry=r)
        self.nacks = Counter("mas_nacks", "Deliveries refused by the agent", registry=r)
        self.lease_extensions = Counter(
            "mas_lease_extensions", "Delivery leases extended by the agent", registry=r
        )
        self.dead_letters = Counter(
            "mas_dead_letters", "Messages moved to the dead-letter stream", ["reason"], registry=r
        )
        self.replies = Counter(
            "mas_replies", "Replies handed back to the request that waited for them", registry=r
        )
        self.late_replies = Counter(
            "mas_late_replies", "Replies that arrived after their request timed out", registry=r
        )
        self.progress_reports = Counter(
            "mas_progress_reports",
            "Progress reports on this replica's requests: handed to a listener (delivered), "
            "none listening (unheard), or after the request was answered or timed out (late)",
            ["outcome"],
            registry=r,
        )
        self.inflight = Gauge(
            "mas_inflight_deliveries", "Deliveries leased to this replica", registry=r
        )
        self.sender_streams = Gauge(
            "mas_sender_streams", "Senders' streams this replica reads", registry=r
        )
        self.redis_errors = Counter(
            "mas_redis_errors", "Redis failures in background loops", ["loop"], registry=r
        )
        self.loop_restarts = Counter(
            "mas_loop_restarts", "Background loops restarted after they failed", ["loop"],
            registry=r,
        )  # fmt: skip
        self.recoveries = Counter(
            "mas_recoveries", "Set-ups done again on a restarted or replaced server", registry=r
        )
        self.decisions = Counter(
            "mas_gateway_decisions",
            "Gateway decisions on messages (accepted, credentials_expired, denied, "
            "rate_limited, dlp_blocked, circuit_open, unsigned, refused_on_receive)",
            ["decision"],
            registry=r,
        )
        self.dlp_findings = Counter(
            "mas_dlp_findings", "DLP detector hits", ["detector", "action"], registry=r
        )
        self.circuits = Gauge(
            "mas_circuits", "Targets whose circuit breaker is in each state", ["state"], registry=r
        )
        self.policy_reloads = Counter(
            "mas_policy_reloads", "Gateway policy revisions put in force", registry=r
        )
        self.policy_errors = Counter(
            "mas_policy_errors", "Gateway policy documents rejected as invalid", registry=r
        )
        self.http_requests = Counter(
            "mas_http_requests", "HTTP requests served", ["route", "method", "status"], registry=r
        )
        self.connections = Gauge(
            "mas_http_connections", "HTTP connections open (MAS_MAX_CONNECTIONS)", registry=r
        )
        self.connections_refused = Counter(
            "mas_http_connections_refused",
            "HTTP connections refused because MAS_MAX_CONNECTIONS were open",
            registry=r,
        )
        self.a2a_connections_refused = Counter(
            "mas_a2a_connections_refused",
            "A2A listener connections refused because MAS_A2A_MAX_CONNECTIONS were open",
            registry=r,
        )
        self.subscribers = Gauge(
            "mas_subscribers", "Delivery streams open (MAS_MAX_SUBSCRIBERS)", registry=r
        )
        self.http_duration = Histogram(
            "mas_http_request_duration_seconds",
            "HTTP request latency (time to headers for streams)",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
            registry=r,
        )
        self.stage_seconds = Summary(
            "mas_stage_seconds",
            "Time of each stage of a message inside the sidecar, one observation per message",
            ["stage"],
            registry=r,
        )
        self._stages = {stage: self.stage_seconds.labels(stage) for stage in STAGES}
        self.rule_decisions = Counter(
            "mas_rule_decisions",
            "Messages this replica sent (accepted), or refused as denied or rate_limited, by the "
            "policy rule or rate limit that decided",
            ["decision", "rule"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "mas_delivery_latency_seconds",
            "From a message's creation by its sender's sidecar to its first delivery to this agent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.handler_seconds = Histogram(
            "mas_handler_seconds",
            "Time the agent's handler took on a message, as the agent reports it with its ack",
            buckets=HANDLER_BUCKETS,
            registry=r,
        )
        self._rules = FoldedLabels()
        self._detectors = FoldedLabels()

    def count_rule(self, decision: str, rule: str | None) -> None:
        """One decision on a message sent by ``rule`` (a rule's or rate limit's name; None: no
        rule matched)."""
        self.rule_decisions.labels(decision, NO_RULE if rule is None else self._rules(rule)).inc()

    def delivered(self, created_at_ms: int, now_ms: int) -> None:
        """A first delivery of a message created at ``created_at_ms``; a sender's clock ahead
        of ours counts as no time."""
        self.delivery_latency.observe(max(0, now_ms - created_at_ms) / 1000)

    def observe_stage(self, stage: Stage, seconds: float, messages: int = 1) -> None:
        """``seconds`` spent on ``stage`` for ``messages`` messages together: one observation
        per message, each its equal share (so ``_count`` counts messages, ``_sum`` the time)."""
        if messages <= 0:
            return
        child, share = self._stages[stage], seconds / messages
        for _ in range(messages):
            child.observe(share)

    def count_findings(self, findings: Iterable[Finding]) -> None:
        """Count DLP findings by detector and action."""
        for finding in findings:
            detector = self._detectors(finding.detector)
            self.dlp_findings.labels(detector, finding.action.value).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return bytes(generate_latest(self.registry))
