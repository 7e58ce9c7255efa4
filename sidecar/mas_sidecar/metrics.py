"""Prometheus metrics of one sidecar, in a registry of its own (served on ``/metrics``).

Label values come from small fixed sets (route templates, outcome names, dead-letter reasons),
never from message ids, agent ids or types, so cardinality stays bounded.
Used by the HTTP middleware, the Redis Streams bridge, the gateway checks and the registry.

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
        self.late_replies = Counter(
            "mas_late_replies", "Replies that arrived after their request timed out", registry=r
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
            self.dlp_findings.labels(finding.detector, finding.action.value).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return bytes(generate_latest(self.registry))
