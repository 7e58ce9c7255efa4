"""GatewayPolicy specs, the compiled policy document, and each agent's effective policy.

Authors write ``GatewayPolicy`` resources (Kubernetes custom resources, or YAML files for
``mas up``). :func:`compile_policies` turns all of them into one :class:`CompiledPolicy` with a
content-derived ``revision``; the operator (or ``mas up``) publishes it and every sidecar
enforces it. :func:`effective_policy` extracts what applies to one sending agent: the policies
whose ``agents`` select it contribute their rules, rate limits, DLP detectors and settings.

Merging many policies stays predictable: rules are all evaluated (deny wins), every rate limit
applies, a DLP detector takes the strictest action any policy gives it, signing is required if
any policy requires it, discovery is restricted if any policy restricts it. The ``audit``
section (payloads and retention) comes whole from the first selecting policy that has one.

Pure; used by local mode, the operator, and the sidecar's policy store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import orjson
from pydantic import Field

from mas_core.policy.dlp import CustomDetector, DlpAction, DlpPolicy
from mas_core.policy.rules import AgentGlob, Rule, ScopedRule, glob_match, qualify_glob
from mas_core.schema import ResourceModel

_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_DLP_STRICTNESS = {DlpAction.LOG: 0, DlpAction.REDACT: 1, DlpAction.BLOCK: 2}


class RateLimit(ResourceModel):
    """A token bucket on each selected sender: ``rate`` messages per second, ``burst`` at once.

    ``replica`` scope counts in each sidecar (no Redis round trip); ``agent`` scope shares one
    bucket among all replicas of the agent through a Redis script.
    """

    name: Annotated[str, Field(pattern=_NAME)] = Field(
        description="The limit's name (a DNS-1123 label), shown when it refuses a message."
    )
    rate: float = Field(gt=0, le=1_000_000, description="Messages per second refilled.")
    burst: int = Field(ge=1, le=1_000_000, description="Messages that may be sent at once.")
    scope: Literal["replica", "agent"] = Field(
        default="replica",
        description="replica: a bucket per sidecar replica; agent: one bucket shared by all "
        "replicas of the agent.",
    )


class CircuitBreaker(ResourceModel):
    """When a sender stops sending to a target for a while (503 with ``Retry-After``)."""

    failure_threshold: int = Field(
        default=5,
        ge=1,
        le=10_000,
        description="Consecutive failed writes to a target that open its circuit.",
    )
    backlog_threshold: int = Field(
        default=10_000,
        ge=1,
        le=100_000_000,
        description="Backlog of the sender's own messages at a target (not yet acked) that "
        "opens its circuit to that target.",
    )
    open_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds an open circuit refuses messages (the Retry-After).",
    )
    when_not_live: bool = Field(
        default=False, description="Also open the circuit when the target has no live replica."
    )


class Signing(ResourceModel):
    """Whether receivers require messages signed with the sender's Ed25519 key."""

    required: bool = Field(
        default=True, description="Refuse unsigned messages (required if any policy says so)."
    )


class AuditRetention(ResourceModel):
    """How much of an agent's audit trail stays in Redis. The control plane archives older
    entries (with a signed checkpoint of where it cut) before it trims them, and only when it
    has an archive; it cuts in batches (a tenth of ``entries``, at most 1,000 entries), so
    Redis holds up to a batch more. A receiver's entry records a whole batch of messages it
    read together (up to 100)."""

    entries: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000_000,
        description="Keep at most this many of the newest entries in Redis.",
    )
    seconds: int | None = Field(
        default=None,
        ge=1,
        le=10 * 366 * 86_400,
        description="Keep entries in Redis for at most this many seconds.",
    )


class Audit(ResourceModel):
    """How payloads appear in the audit trail (their SHA-256, or the DLP-redacted payload), and
    how much of the trail stays in Redis."""

    payloads: Literal["hash", "redacted"] = Field(
        default="hash",
        description="hash: record payloads as SHA-256 hashes; redacted: the DLP-redacted payload.",
    )
    retention: AuditRetention | None = Field(
        default=None,
        description="Archive, then trim from Redis, entries beyond this (default: keep all).",
    )


class Discovery(ResourceModel):
    """With ``restricted``, discovery lists only agents the caller may send something to."""

    restricted: bool = Field(
        default=False,
        description="Discovery lists only the agents the caller may send some message to.",
    )


class GatewayPolicySpec(ResourceModel):
    """``spec`` of a ``GatewayPolicy``; agent patterns are relative to its namespace."""

    agents: list[AgentGlob] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=256,
        description="The sending agents the policy applies to: name (in the policy's "
        "namespace), namespace/name, '*' or globs of them.",
    )
    rules: list[Rule] = Field(
        default_factory=list,
        max_length=1000,
        description="Allow and deny rules; deny wins, and a message no rule allows is denied.",
    )
    rate_limits: list[RateLimit] = Field(
        default_factory=list,
        max_length=32,
        description="Token buckets on each selected sender; every one applies.",
    )
    dlp: DlpPolicy | None = Field(
        default=None, description="Data-loss prevention on outgoing payloads."
    )
    circuit_breaker: CircuitBreaker | None = Field(
        default=None, description="When a sender stops sending to a struggling target."
    )
    signing: Signing | None = Field(default=None, description="Message signing requirement.")
    audit: Audit | None = Field(
        default=None,
        description="How payloads appear in the audit trail, and how much of it stays in Redis.",
    )
    discovery: Discovery | None = Field(
        default=None, description="Whether discovery is restricted to reachable agents."
    )


class CompiledEntry(ResourceModel):
    """One policy inside the compiled document, its agent patterns qualified."""

    name: str
    spec: GatewayPolicySpec


class CompiledPolicy(ResourceModel):
    """What sidecars enforce: every policy, and a revision that changes with the content."""

    revision: str
    policies: list[CompiledEntry] = Field(default_factory=list)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True))


def _qualified(spec: GatewayPolicySpec, namespace: str) -> GatewayPolicySpec:
    def rule(r: Rule) -> Rule:
        return r.model_copy(
            update={
                "senders": r.senders.model_copy(
                    update={"agents": [qualify_glob(a, namespace) for a in r.senders.agents]}
                ),
                "targets": r.targets.model_copy(
                    update={"agents": [qualify_glob(a, namespace) for a in r.targets.agents]}
                ),
            }
        )

    return spec.model_copy(
        update={
            "agents": [qualify_glob(a, namespace) for a in spec.agents],
            "rules": [rule(r) for r in spec.rules],
        }
    )


def compile_policies(
    policies: Iterable[tuple[str, str, GatewayPolicySpec]],
) -> CompiledPolicy:
    """One document from ``(namespace, name, spec)`` triples; the revision hashes the content."""
    entries = sorted(
        (
            CompiledEntry(name=f"{ns}/{name}", spec=_qualified(spec, ns))
            for ns, name, spec in policies
        ),
        key=lambda entry: entry.name,
    )
    body = orjson.dumps([e.model_dump(mode="json", by_alias=True) for e in entries])
    revision = hashlib.sha256(body).hexdigest()[:16]
    return CompiledPolicy(revision=revision, policies=entries)


@dataclass(frozen=True)
class EffectivePolicy:
    """Everything that applies to one sending agent."""

    revision: str
    rules: tuple[ScopedRule, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()
    dlp: DlpPolicy = field(default_factory=lambda: DlpPolicy(enabled=False))
    circuit_breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    signing_required: bool = True
    audit: Audit = field(default_factory=Audit)
    discovery_restricted: bool = False


def effective_policy(document: CompiledPolicy, agent_id: str) -> EffectivePolicy:
    """The merged policy of every entry whose ``agents`` select ``agent_id``."""
    selected = [e for e in document.policies if glob_match(e.spec.agents, agent_id)]
    specs = [e.spec for e in selected]
    return EffectivePolicy(
        revision=document.revision,
        rules=tuple(ScopedRule(e.name, r) for e in selected for r in e.spec.rules),
        rate_limits=tuple(limit for s in specs for limit in s.rate_limits),
        dlp=merge_dlp([s.dlp for s in specs if s.dlp is not None]),
        circuit_breaker=next(
            (s.circuit_breaker for s in specs if s.circuit_breaker), CircuitBreaker()
        ),
        signing_required=any(s.signing.required for s in specs if s.signing)
        or not any(s.signing for s in specs),
        audit=next((s.audit for s in specs if s.audit), Audit()),
        discovery_restricted=any(s.discovery.restricted for s in specs if s.discovery),
    )


def merge_dlp(sections: Sequence[DlpPolicy]) -> DlpPolicy:
    """Union of enabled sections; each detector keeps its strictest action."""
    enabled = [s for s in sections if s.enabled]
    if not enabled:
        return DlpPolicy(enabled=False)
    detectors: dict[str, DlpAction] = {}
    for section in enabled:
        for name, action in section.detectors.items():
            current = detectors.get(name)
            if current is None or _DLP_STRICTNESS[action] > _DLP_STRICTNESS[current]:
                detectors[name] = action
    custom: dict[str, CustomDetector] = {}
    for section in enabled:
        for detector in section.custom:
            custom.setdefault(detector.name, detector)
    return DlpPolicy(enabled=True, detectors=detectors, custom=list(custom.values()))
