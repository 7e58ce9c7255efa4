"""Pure builders of the status the operator writes on Agents, GatewayPolicies and ExternalAgents.

Each builder takes what a handler learned (the conditions already there, the outcome of a
reconcile or a status refresh, the time as ``now``) and returns the typed status models of
:mod:`mas_operator.crds` with only the fields it decides set; :func:`status_patch` turns one into
what kopf patches: those fields in their wire form (camelCase names, RFC 3339 times in whole
seconds, ``null`` where a field is cleared), keeping only those that differ from the status as
read. No I/O and no clock here; :mod:`mas_operator.handlers` calls them.

Conditions follow the Kubernetes API conventions: one per type, each with the generation it
was computed from; its ``lastTransitionTime`` changes only when its status does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from mas_control.audit_keeper import Kept
from mas_core.policy.document import AuditRetention
from mas_operator.crds import (
    AgentStatus,
    AuditStatus,
    Condition,
    ExternalAgentStatus,
    GatewayPolicyStatus,
    InboxStatus,
)
from mas_operator.policies import PolicyVerdict


def status_patch(current: Mapping[str, Any], fresh: BaseModel) -> dict[str, Any]:
    """The fields ``fresh`` sets, in wire form, that differ from ``current`` (the status as
    read): what kopf should patch, empty when nothing changed."""
    wire = fresh.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return {key: value for key, value in wire.items() if current.get(key) != value}


def moment(seconds: float) -> datetime:
    """A Unix time as a UTC datetime in whole seconds (how status times are written)."""
    return datetime.fromtimestamp(int(seconds), UTC)


def rfc3339(when: datetime) -> str:
    """``when`` as status and messages write it: ``2030-01-01T00:00:00Z``."""
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- conditions ---------------------------------------------------------------------------------


def read_conditions(status: Mapping[str, Any]) -> list[Condition]:
    """The conditions of a status as read; an entry that is not a valid condition (no version of
    the operator writes one) is dropped, and goes with the next patch."""
    conditions: list[Condition] = []
    for raw in status.get("conditions") or ():
        try:
            conditions.append(Condition.model_validate(raw))
        except ValidationError:
            continue
    return conditions


def condition(
    type: str, ok: bool, reason: str, message: str, *, generation: int, now: datetime
) -> Condition:
    """One condition of ``type``, computed from ``generation`` at ``now``."""
    return Condition(
        type=type,
        status="True" if ok else "False",
        reason=reason,
        message=message,
        last_transition_time=now,
        observed_generation=generation,
    )


def set_condition(conditions: Sequence[Condition], new: Condition) -> list[Condition]:
    """``conditions`` with ``new`` in place of the condition of its type (appended if none).

    The old ``lastTransitionTime`` is kept while the status stays the same.
    """
    result: list[Condition] = []
    replaced = False
    for old in conditions:
        if old.type != new.type:
            result.append(old)
            continue
        if not replaced:
            same = old.status == new.status and old.last_transition_time is not None
            kept = {"last_transition_time": old.last_transition_time} if same else {}
            result.append(new.model_copy(update=kept))
        replaced = True
    if not replaced:
        result.append(new)
    return result


def _find(conditions: Sequence[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)


# -- Agent --------------------------------------------------------------------------------------


def agent_provisioned(
    conditions: Sequence[Condition],
    *,
    acl_user: str,
    token_expires_at: datetime,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """The agent's ACL user is in Redis and its credentials Secret is applied."""
    conditions = set_condition(
        conditions,
        condition(
            "RedisACLReady",
            True,
            "UserApplied",
            f"ACL user {acl_user} reaches only the agent's own keys",
            generation=generation,
            now=now,
        ),
    )
    return set_condition(
        conditions,
        condition(
            "CredentialsIssued",
            True,
            "Issued",
            f"identity token valid until {rfc3339(token_expires_at)}",
            generation=generation,
            now=now,
        ),
    )


def selector_text(labels: Mapping[str, str]) -> str:
    """A label selector in its string form (``status.selector``, for the scale subresource)."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def agent_reconciled(
    conditions: Sequence[Condition],
    *,
    token_expires_at: datetime,
    selector: str,
    generation: int,
    now: datetime,
) -> AgentStatus:
    """Everything of ``generation`` is applied: until the status refresh sees the Deployment
    rolled out, ``Ready`` is False (``RollingOut``) unless it already describes this
    generation. ``selector`` (of the agent's pods) is there for the scale subresource from the
    first reconcile on."""
    ready = _find(conditions, "Ready")
    if ready is None or (ready.observed_generation or 0) < generation:
        conditions = set_condition(
            conditions,
            condition(
                "Ready",
                False,
                "RollingOut",
                "waiting for the Deployment",
                generation=generation,
                now=now,
            ),
        )
    return AgentStatus(
        conditions=list(conditions),
        observed_generation=generation,
        token_expires_at=token_expires_at,
        selector=selector,
    )


def agent_not_ready(
    conditions: Sequence[Condition], reason: str, message: str, *, generation: int, now: datetime
) -> AgentStatus:
    """``Ready`` is False for ``reason``: an invalid (``InvalidSpec``) or refused
    (``Forbidden``) spec, or a name another object holds (``NameTaken``)."""
    new = condition("Ready", False, reason, message, generation=generation, now=now)
    return AgentStatus(conditions=set_condition(conditions, new))


def agent_redis_unavailable(
    conditions: Sequence[Condition], message: str, *, generation: int, now: datetime
) -> AgentStatus:
    """The agent's ACL user could not be applied: Redis did not answer."""
    new = condition(
        "RedisACLReady", False, "RedisUnavailable", message, generation=generation, now=now
    )
    return AgentStatus(conditions=set_condition(conditions, new))


def agent_ready(
    *, deployment_status: Mapping[str, Any], deployment_generation: int, replicas: int
) -> tuple[bool, str]:
    """Whether the agent's Deployment has rolled out and serves ``replicas`` replicas.

    ``deployment_status`` is the Deployment's ``status`` and ``deployment_generation`` its
    ``metadata.generation``; ``replicas`` is the Agent's ``spec.replicas``. Ready needs the
    Deployment controller to have observed the current generation and every replica to be
    updated and available, with no old replica left. The string says why, for people.
    """
    observed = int(deployment_status.get("observedGeneration") or 0)
    if observed < deployment_generation:
        return False, (
            f"the Deployment controller has not yet observed generation {deployment_generation} "
            f"(observed {observed})"
        )
    for cond in deployment_status.get("conditions") or ():
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return False, f"the rollout is stuck: {cond.get('message') or 'deadline exceeded'}"
    updated = int(deployment_status.get("updatedReplicas") or 0)
    available = int(deployment_status.get("availableReplicas") or 0)
    total = int(deployment_status.get("replicas") or 0)
    if updated < replicas:
        return False, f"rollout in progress: {updated} of {replicas} replicas updated"
    if total > updated:
        return False, f"rollout in progress: {total - updated} old replicas pending termination"
    if available < replicas:
        return False, f"{available} of {replicas} replicas available"
    if updated != replicas or available != replicas:
        return False, f"{updated} replicas updated and {available} available, {replicas} wanted"
    return True, f"{replicas} of {replicas} replicas available"


@dataclass(frozen=True)
class AgentObserved:
    """What a status refresh learned about an agent."""

    replicas: int  # the Agent's spec.replicas
    ready_replicas: int  # of its Deployment
    ready: bool  # the Deployment has rolled out (see agent_ready)
    ready_message: str
    token_expires_at: datetime | None  # of the token in force; None: not renewed as due
    policy_revision: str | None  # the published policy's; None: none is published
    enforcing: int  # the agent's sidecars that report enforcing that revision
    selector: str  # of the agent's pods
    current_replicas: int = 0  # pods of its Deployment, ready or not
    redis_error: str | None = None  # Redis did not answer: the policy facts are unknown
    inbox: InboxStatus | None = None  # its backlog; None: not measured this time


def agent_refreshed(
    conditions: Sequence[Condition], seen: AgentObserved, *, generation: int, now: datetime
) -> AgentStatus:
    """``Ready`` and ``PolicyApplied`` (every replica enforces the published revision), the
    replica counts (``replicas`` the Deployment's pods, as the scale subresource reports them;
    ``readiness`` ready of desired, as ``n/m``), the selector, and the token's expiry, revision in
    force and inbox backlog when known."""
    conditions = set_condition(
        conditions,
        condition(
            "Ready",
            seen.ready,
            "Available" if seen.ready else "RollingOut",
            seen.ready_message,
            generation=generation,
            now=now,
        ),
    )
    fields: dict[str, Any] = {
        "replicas": seen.current_replicas,
        "ready_replicas": seen.ready_replicas,
        "readiness": f"{seen.ready_replicas}/{seen.replicas}",
        "selector": seen.selector,
    }
    if seen.inbox is not None:
        fields["inbox"] = seen.inbox
    if seen.token_expires_at is not None:
        fields["token_expires_at"] = seen.token_expires_at
    if seen.redis_error is not None:
        applied = condition(
            "PolicyApplied",
            False,
            "RedisUnavailable",
            seen.redis_error,
            generation=generation,
            now=now,
        )
    else:
        ok = seen.policy_revision is not None and seen.enforcing >= seen.replicas
        if seen.policy_revision is None:
            message = "no gateway policy has been published"
        else:
            message = (
                f"{seen.enforcing} of {seen.replicas} sidecars enforce revision "
                f"{seen.policy_revision}"
            )
        applied = condition(
            "PolicyApplied",
            ok,
            "Enforced" if ok else "Pending",
            message,
            generation=generation,
            now=now,
        )
        if ok:
            fields["policy_revision"] = seen.policy_revision
    return AgentStatus(conditions=set_condition(conditions, applied), **fields)


def audit_status(kept: Kept, *, retention: AuditRetention | None, archiving: bool) -> AuditStatus:
    """``status.audit`` after a round of the audit keeper (``archiving``: the operator has an
    archive directory)."""
    checkpoint = kept.checkpoint
    fields: dict[str, Any] = {"intact": kept.problem is None}
    if checkpoint is not None:
        fields |= {
            "checkpoint": checkpoint.number,
            "checkpointed_at": moment(checkpoint.taken_at_ms / 1000),
            "entries": checkpoint.head.total,
            "archived_entries": checkpoint.cut.total,
        }
    if kept.problem is not None:
        message = f"NOT intact: {kept.problem}; the last good checkpoint is kept as evidence"
    elif checkpoint is None:
        message = "no audit entries yet"
    elif retention is None:
        message = "checkpointed; no audit retention in its policy: every entry stays in Redis"
    elif not archiving:
        message = (
            "checkpointed; its policy sets an audit retention, but the operator has no archive "
            "(MAS_AUDIT_ARCHIVE_DIR), so nothing is trimmed"
        )
    else:
        message = "checkpointed; entries past the retention are archived, then trimmed"
    return AuditStatus(message=message, **fields)


def audit_unarchived(status: Mapping[str, Any], error: str) -> AuditStatus:
    """``status.audit`` when the archive could not be written: what it said before (intact
    when it said nothing), and why nothing is trimmed."""
    try:
        before = AuditStatus.model_validate(status.get("audit") or {"intact": True})
    except ValidationError:
        before = AuditStatus(intact=True)
    message = f"cannot write the archive ({error}), so nothing is trimmed"
    return before.model_copy(update={"message": message})


# -- GatewayPolicy ------------------------------------------------------------------------------


def policy_reconciled(
    conditions: Sequence[Condition],
    verdict: PolicyVerdict | None,
    *,
    revision: str,
    generation: int,
    now: datetime,
) -> GatewayPolicyStatus:
    """The policy after all policies were compiled into ``revision``: ``Valid`` and ``error``
    from its ``verdict`` (None: it was not compiled, e.g. deleted meanwhile, and counts as
    valid)."""
    if verdict is None or verdict.valid:
        valid = condition(
            "Valid", True, "Compiled", f"in revision {revision}", generation=generation, now=now
        )
        error = None
    else:
        kept = (
            "its last good version stays in force"
            if verdict.in_force
            else "it was never valid, so it is not in force"
        )
        valid = condition(
            "Valid", False, "Invalid", f"{verdict.error}; {kept}", generation=generation, now=now
        )
        error = verdict.error
    return GatewayPolicyStatus(
        conditions=set_condition(conditions, valid),
        observed_generation=generation,
        revision=revision,
        error=error,
    )


def policy_refreshed(
    *, revision: str, selected_agents: int, enforced_by: int
) -> GatewayPolicyStatus:
    """The revision in force, the agents the policy selects and the replicas enforcing it."""
    return GatewayPolicyStatus(
        revision=revision, selected_agents=selected_agents, enforced_by=enforced_by
    )


# -- ExternalAgent ------------------------------------------------------------------------------


def external_refused(
    conditions: Sequence[Condition], reason: str, message: str, *, generation: int, now: datetime
) -> ExternalAgentStatus:
    """``Registered`` is False for ``reason``: an invalid (``InvalidSpec``) or refused
    (``Forbidden``) spec; the version accepted before, if any, stays in discovery."""
    new = condition("Registered", False, reason, message, generation=generation, now=now)
    return ExternalAgentStatus(conditions=set_condition(conditions, new))


def external_registered(
    conditions: Sequence[Condition],
    *,
    credentials: str | None,
    missing: str | None,
    generation: int,
    now: datetime,
) -> ExternalAgentStatus:
    """The external agent is in discovery (``Registered``), and whether the token of
    ``credentials`` (``Secret <name> key <key>``; None: the remote is open) was found
    (``CredentialsReady``; ``missing`` says what is not there)."""
    registered = condition(
        "Registered",
        True,
        "Registered",
        "in discovery; senders' sidecars call it over A2A",
        generation=generation,
        now=now,
    )
    conditions = set_condition(conditions, registered)
    if credentials is None:
        ready = condition(
            "CredentialsReady", True, "NoCredentials", "the remote is called without a token",
            generation=generation, now=now,
        )  # fmt: skip
    elif missing is None:
        ready = condition(
            "CredentialsReady", True, "Found",
            f"the token in {credentials} goes to the sidecars of the agents the policy lets "
            "call it", generation=generation, now=now,
        )  # fmt: skip
    else:
        ready = condition(
            "CredentialsReady", False, "SecretMissing", f"{missing}; the remote is called "
            "without a token until it is there", generation=generation, now=now,
        )  # fmt: skip
    return ExternalAgentStatus(
        conditions=set_condition(conditions, ready), observed_generation=generation
    )
