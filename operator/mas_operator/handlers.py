"""The kopf handlers: thin steps of parse, build, apply, report status.

``register(registry, config)`` adds every handler to a kopf registry; :mod:`mas_operator.run`
runs it, the tests run it under ``kopf.testing.KopfRunner``. Handlers are synchronous (kopf runs
them in worker threads) and idempotent: each reconcile rebuilds the desired objects from the
spec and what exists (the agent's key, password and still-valid token are kept), applies them
(:meth:`mas_operator.kube.KubeApi.apply`) and patches the status fields that differ, built by
:mod:`mas_operator.status`.

* ``Agent`` created, changed or found at start-up: its Redis ACL user and registry entry, its
  credentials Secret, its Deployment; conditions ``RedisACLReady`` and ``CredentialsIssued``.
  A spec the builders refuse (:func:`mas_operator.builders.refusals`: another agent's
  credentials, the node's filesystem or network, the operator's service account, ...) gets
  ``Ready=False`` with reason ``Forbidden`` and nothing at all is applied for that generation:
  the pods of the last accepted spec, if any, keep running as they are. An Agent named like a
  Deployment or Secret it does not own gets reason ``NameTaken`` and leaves that object alone.
* A timer per ``Agent``: applies its Secret and Deployment again, so what was deleted or
  changed by hand comes back (server-side apply as ``mas-operator``; nothing is written when
  nothing differs), renews the token at half its lifetime (sidecars reload the mounted files),
  and reports ``Ready`` (the current generation's replicas are available), ``PolicyApplied``
  (its sidecars report the revision in force), the Deployment's replica counts and pod selector
  (which the Agent's ``scale`` subresource serves: ``kubectl scale`` and autoscalers set
  ``spec.replicas``, and the reconcile hands it to the Deployment) and the inbox backlog
  (:mod:`mas_control.backlog`), also exported as the gauges of
  :class:`mas_operator.metrics.OperatorMetrics`.
* A second timer per ``Agent`` (``MAS_AUDIT_CHECKPOINT_SECONDS``): a signed checkpoint of its
  audit trail, and, past its GatewayPolicy's ``audit.retention``, entries archived to
  ``MAS_AUDIT_ARCHIVE_DIR`` and then trimmed (:mod:`mas_control.audit_keeper`); ``status.audit``
  says whether the trail is intact. A trail found rewritten keeps its last good checkpoint.
* ``Agent`` deleted: the finalizer drops the ACL user and registry entry, and the agent's keys
  when ``deletionPolicy: Delete``; the Secret and Deployment go with their owner reference.
* ``GatewayPolicy`` created, changed, deleted (a finalizer) or found at start-up: all policies
  are compiled into one document and published (Redis and a ConfigMap); an invalid one keeps
  its last good version in force and says why in its ``Valid`` condition. A timer per policy
  reports its revision, the agents it selects and the replicas enforcing it.
* ``ExternalAgent`` created, changed or found at start-up (:mod:`mas_operator.remotes`): a spec
  naming an agent's Secret or one of the operator's namespace is refused (``Registered=False``,
  ``Forbidden``); otherwise its token is read from its Secret, its registry entry written (never
  over an Agent's: ``NameTaken``, retried), and it is held for the agents' remotes Secrets;
  ``Registered`` and ``CredentialsReady`` report it. Each Agent's reconcile and status round
  applies ``<agent>-mas-remotes`` with the tokens of the external agents its policy could let it
  call. A timer reads the token again (rotation); deletion takes it out of discovery.
* A recovery thread, started at start-up and stopped at clean-up: every second it probes Redis
  (:mod:`mas_control.recovery`) and puts back what a restarted or replaced server lost — the
  function library, the ACL users and registry entries of the agents reconciled, the external
  agents' entries, the policy (compiled again) — within seconds rather than at the next
  reconcile.

Every kind carries the finalizer ``mas.dev/finalizer`` (kopf's timers need it too): delete
Agents, GatewayPolicies and ExternalAgents before uninstalling the operator, or they wait for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from dataclasses import field as default
from datetime import UTC, datetime
from typing import Any, NoReturn

import kopf
from pydantic import BaseModel

from mas_control.recovery import PROBE_SECONDS, Provisioned, Repair, ServerWatch
from mas_core.acl import acl_username
from mas_core.identity.credentials import Anchor
from mas_core.manifests import (
    AGENT_KIND,
    API_VERSION,
    EXTERNAL_AGENT_KIND,
    AgentManifest,
    ExternalAgentManifest,
    ManifestError,
    parse_agent,
)
from mas_core.policy.document import CompiledPolicy, effective_policy
from mas_operator import builders, remotes
from mas_operator.anchor import load_or_create_anchor
from mas_operator.config import OperatorConfig
from mas_operator.crds import AgentStatus, Condition, ExternalAgentStatus, InboxStatus
from mas_operator.credentials import plan_credentials, read_existing
from mas_operator.kube import (
    KubeApi,
    KubeError,
    Manifest,
    NotOwnedError,
    ensure_controlled,
    load_client,
    login,
)
from mas_operator.metrics import OperatorMetrics
from mas_operator.policies import (
    PolicyVerdict,
    agent_enforcing_replicas,
    compile_cluster,
    enforcement,
)
from mas_operator.redis_admin import RedisAdmin, RedisAdminError
from mas_operator.status import (
    AgentObserved,
    agent_not_ready,
    agent_provisioned,
    agent_ready,
    agent_reconciled,
    agent_redis_unavailable,
    agent_refreshed,
    audit_status,
    audit_unarchived,
    external_refused,
    external_registered,
    moment,
    policy_reconciled,
    policy_refreshed,
    read_conditions,
    selector_text,
    status_patch,
)

AGENTS = ("mas.dev", "v1alpha1", "agents")
POLICIES = ("mas.dev", "v1alpha1", "gatewaypolicies")
EXTERNALS = ("mas.dev", "v1alpha1", "externalagents")
FINALIZER = "mas.dev/finalizer"

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What every handler shares, made once at start-up and kept in kopf's memo."""

    config: OperatorConfig
    kube: KubeApi
    redis: RedisAdmin
    anchor: Anchor
    metrics: OperatorMetrics
    policy_lock: threading.Lock
    # What the operator keeps on Redis per agent, to put back on a server that lost it.
    provisioned: dict[str, Provisioned] = default(default_factory=dict)
    # The ExternalAgents accepted, by id, with their tokens: the agents' remotes Secrets and
    # the registry entries a restarted server lost are made from them.
    externals: dict[str, remotes.Remote] = default(default_factory=dict)
    watch: ServerWatch = default(default_factory=ServerWatch)
    stopping: threading.Event = default(default_factory=threading.Event)
    published_revision: str | None = None  # of the policy document this operator published


def operator_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    """kopf settings: our finalizer, handler state in ``mas.dev`` annotations (the CRD status
    schema has no place for kopf's), and peering unless standalone."""
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="mas.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="mas.dev", key="last-handled-configuration"
    )
    settings.peering.name = config.peering_name
    settings.peering.standalone = config.standalone
    settings.peering.mandatory = not config.standalone
    settings.posting.level = logging.WARNING
    return settings


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


def _report(patch: kopf.Patch, status: Mapping[str, Any], fresh: BaseModel) -> None:
    """Patch the fields of ``fresh`` (a status model) that differ from ``status``."""
    patch.status.update(status_patch(status, fresh))


def parse_agent_body(body: Mapping[str, Any]) -> AgentManifest:
    """The Agent resource as the model the builders take (kopf's bookkeeping dropped)."""
    meta = body.get("metadata") or {}
    document = {
        "apiVersion": API_VERSION,
        "kind": AGENT_KIND,
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace") or "default"},
        "spec": body.get("spec") or {},
    }
    return parse_agent(document, f"Agent {meta.get('namespace')}/{meta.get('name')}")


# -- Agent ---------------------------------------------------------------------------------------


def _apply_credentials(
    runtime: Runtime, agent: AgentManifest, owner_uid: str, *, provision: bool
) -> datetime:
    """Apply the agent's credentials Secret (its token renewed when due) and, with
    ``provision`` or when the Secret's password or token changes, its ACL user and registry
    entry; when the token in force expires."""
    secret = runtime.kube.get_secret(agent.metadata.namespace, builders.secret_name(agent))
    if secret is not None:
        # Before its key or password is trusted: a Secret someone else made is not adopted.
        ensure_controlled(secret, builders.owner_reference(agent=agent, owner_uid=owner_uid))
    existing = read_existing(secret, anchor=runtime.anchor, agent_id=agent.agent_id)
    plan = plan_credentials(
        agent=agent,
        anchor=runtime.anchor,
        existing=existing,
        redis_url=runtime.config.agent_redis_url,
        ttl_seconds=runtime.config.token_ttl_seconds,
        now=time.time(),
    )
    if provision or plan.reissued or plan.password != existing.password:
        runtime.redis.ensure_agent(
            agent.agent_id, plan.password, agent.spec.capabilities, agent.spec.roles
        )
        runtime.provisioned[agent.agent_id] = Provisioned(
            plan.password, agent.spec.capabilities, agent.spec.roles
        )
    desired = builders.credentials_secret(agent=agent, owner_uid=owner_uid, files=plan.files)
    runtime.kube.apply(desired, secret)
    if plan.reissued:
        runtime.metrics.token_renewals.inc()
    return moment(plan.claims.exp)


def _apply_remotes(runtime: Runtime, agent: AgentManifest, owner_uid: str) -> None:
    """Apply the agent's Secret of external agents' tokens: those the published policy could
    let it call (:mod:`mas_operator.remotes`)."""
    policy = runtime.redis.published_policy(max_age=_shared_age(runtime))
    tokens = remotes.callable_tokens(agent, list(runtime.externals.values()), policy)
    current = runtime.kube.get_secret(agent.metadata.namespace, builders.remotes_secret_name(agent))
    if current is not None:
        ensure_controlled(current, builders.owner_reference(agent=agent, owner_uid=owner_uid))
    desired = remotes.remotes_secret(agent=agent, owner_uid=owner_uid, tokens=tokens)
    runtime.kube.apply(desired, current)


def _apply_deployment(runtime: Runtime, desired: builders.Manifest) -> tuple[Manifest, bool]:
    """Apply the agent's Deployment; the object as stored, and whether it had to be created."""
    meta = desired["metadata"]
    current = runtime.kube.get_deployment(meta["namespace"], meta["name"])
    return runtime.kube.apply(desired, current), current is None


def _apply_a2a_service(runtime: Runtime, agent: AgentManifest, owner_uid: str) -> None:
    """The Service of an exposed agent's A2A port; an agent no longer exposed loses the one
    the operator made for it (none other: a Service of that name it does not control stays)."""
    namespace, name = agent.metadata.namespace, builders.a2a_service_name(agent)
    current = runtime.kube.get_service(namespace, name)
    if agent.spec.a2a is not None and agent.spec.a2a.expose:
        runtime.kube.apply(builders.a2a_service(agent=agent, owner_uid=owner_uid), current)
    elif current is not None:
        ensure_controlled(current, builders.owner_reference(agent=agent, owner_uid=owner_uid))
        runtime.kube.delete_service(namespace, name)


def reconcile_agent(
    *,
    body: Mapping[str, Any],
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    memo: Any,
    patch: kopf.Patch,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    runtime = _runtime(memo)
    generation = int(meta.get("generation") or 0)
    conditions = read_conditions(status)
    try:
        agent = parse_agent_body(body)
    except ManifestError as exc:
        _not_ready(
            runtime,
            patch,
            status,
            conditions=conditions,
            reason="InvalidSpec",
            message=str(exc),
            generation=generation,
        )
    owner_uid = str(meta.get("uid") or "")
    try:
        # Built first: a spec that cannot or may not become a Deployment gets nothing at all.
        deployment = _desired_deployment(runtime, agent, owner_uid)
    except builders.PodRefused as exc:
        message = (
            f"refused: {exc}; nothing of generation {generation} is applied, and the pods of "
            "the last accepted spec, if any, keep running as they are"
        )
        _not_ready(
            runtime,
            patch,
            status,
            conditions=conditions,
            reason="Forbidden",
            message=message,
            generation=generation,
        )
    except builders.BuildError as exc:
        _not_ready(
            runtime,
            patch,
            status,
            conditions=conditions,
            reason="InvalidSpec",
            message=str(exc),
            generation=generation,
        )
    try:
        expires = _apply_credentials(runtime, agent, owner_uid, provision=True)
        _apply_remotes(runtime, agent, owner_uid)
    except NotOwnedError as exc:
        _name_taken(runtime, patch, status, exc, conditions=conditions, generation=generation)
    except KubeError as exc:
        _retry(runtime, exc)
    except RedisAdminError as exc:
        runtime.metrics.redis_errors.inc()
        down = agent_redis_unavailable(conditions, str(exc), generation=generation, now=_now())
        _report(patch, status, down)
        _retry(runtime, exc)
    conditions = agent_provisioned(
        conditions,
        acl_user=acl_username(agent.agent_id),
        token_expires_at=expires,
        generation=generation,
        now=_now(),
    )
    try:
        _apply_deployment(runtime, deployment)
        _apply_a2a_service(runtime, agent, owner_uid)
    except NotOwnedError as exc:
        _name_taken(runtime, patch, status, exc, conditions=conditions, generation=generation)
    except KubeError as exc:
        _report(patch, status, AgentStatus(conditions=conditions))
        _retry(runtime, exc)
    fresh = agent_reconciled(
        conditions,
        token_expires_at=expires,
        selector=selector_text(builders.selector_labels(agent)),
        generation=generation,
        now=_now(),
    )
    _report(patch, status, fresh)
    runtime.metrics.reconciles.labels("Agent", "applied").inc()
    logger.info("applied %s: Secrets, ACL user, registry entry, Deployment", agent.agent_id)


def _retry(runtime: Runtime, exc: Exception, kind: str = AGENT_KIND) -> NoReturn:
    """The reconcile of a ``kind`` failed on the way (the API server or Redis): kopf retries."""
    runtime.metrics.reconciles.labels(kind, "retry").inc()
    raise kopf.TemporaryError(str(exc), delay=runtime.config.retry_seconds) from None


def _not_ready(
    runtime: Runtime,
    patch: kopf.Patch,
    status: Mapping[str, Any],
    *,
    conditions: list[Condition],
    reason: str,
    message: str,
    generation: int,
) -> NoReturn:
    """Report a spec that is invalid (``InvalidSpec``) or refused (``Forbidden``); kopf retries
    only when the Agent changes, or when the operator restarts (perhaps with other settings)."""
    _report(
        patch,
        status,
        agent_not_ready(conditions, reason, message, generation=generation, now=_now()),
    )
    outcome = "refused" if reason == "Forbidden" else "invalid"
    runtime.metrics.reconciles.labels("Agent", outcome).inc()
    raise kopf.PermanentError(message) from None


def _name_taken(
    runtime: Runtime,
    patch: kopf.Patch,
    status: Mapping[str, Any],
    exc: NotOwnedError,
    *,
    conditions: list[Condition],
    generation: int,
) -> NoReturn:
    """Report an object in the way; retried, since its owner may remove it."""
    message = f"{exc}; rename the Agent or remove that object"
    taken = agent_not_ready(conditions, "NameTaken", message, generation=generation, now=_now())
    _report(patch, status, taken)
    runtime.metrics.reconciles.labels("Agent", "retry").inc()
    raise kopf.TemporaryError(message, delay=runtime.config.retry_seconds) from None


def _desired_deployment(
    runtime: Runtime, agent: AgentManifest, owner_uid: str
) -> builders.Manifest:
    return builders.deployment(
        agent=agent,
        owner_uid=owner_uid,
        settings=runtime.config,
        spec_hash=builders.spec_hash(agent),
        trust_kids=[runtime.anchor.kid],
    )


def _shared_age(runtime: Runtime) -> float:
    """How old a Redis read the status timers may share: half their interval."""
    return runtime.config.status_interval_seconds / 2


def refresh_agent(
    *,
    body: Mapping[str, Any],
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    memo: Any,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Apply the Secret (renewing the token when due) and the Deployment again, which puts
    back what was deleted or changed by hand; report Ready and PolicyApplied."""
    runtime = _runtime(memo)
    generation = int(meta.get("generation") or 0)
    if status.get("observedGeneration") != generation:
        return  # the reconcile handler has not finished this generation yet
    try:
        agent = parse_agent_body(body)
        desired = _desired_deployment(runtime, agent, str(meta.get("uid") or ""))
    except (ManifestError, builders.BuildError):
        # Reported by the reconcile handler (after a restart with stricter settings, too); a
        # refused spec gets no Deployment, token or status from here either.
        return
    try:
        seen = _observe_agent(runtime, agent, desired, str(meta.get("uid") or ""))
    except KubeError as exc:
        log.warning("cannot refresh the status of %s: %s", agent.agent_id, exc)
        return
    conditions = read_conditions(status)
    fresh = agent_refreshed(conditions, seen, generation=generation, now=_now())
    applied = any(c.type == "PolicyApplied" and c.status == "True" for c in fresh.conditions)
    runtime.metrics.agent_gauge(runtime.metrics.policy_applied, agent.agent_id, int(applied))
    _report(patch, status, fresh)


def _observe_agent(
    runtime: Runtime, agent: AgentManifest, desired: builders.Manifest, owner_uid: str
) -> AgentObserved:
    """Apply the agent's Secret and Deployment; what the status refresh reports."""
    try:
        expires: datetime | None = _apply_credentials(runtime, agent, owner_uid, provision=False)
    except RedisAdminError as exc:
        runtime.metrics.redis_errors.inc()
        log.warning("cannot renew the token of %s: %s", agent.agent_id, exc)
        expires = None
    try:
        _apply_remotes(runtime, agent, owner_uid)
    except RedisAdminError as exc:  # its tokens stay as they are until the policy is read
        runtime.metrics.redis_errors.inc()
        log.warning("cannot read the policy for the external agents of %s: %s", agent.agent_id, exc)
    deployment, created = _apply_deployment(runtime, desired)
    dep_status = {} if created else deployment.get("status") or {}
    if created:
        ready, why = False, "the Deployment was missing; it has been created again"
    else:
        ready, why = agent_ready(
            deployment_status=dep_status,
            deployment_generation=int((deployment.get("metadata") or {}).get("generation") or 0),
            replicas=agent.spec.replicas,
        )
    seen = AgentObserved(
        replicas=agent.spec.replicas,
        ready_replicas=int(dep_status.get("readyReplicas") or 0),
        ready=ready,
        ready_message=why,
        token_expires_at=expires,
        policy_revision=None,
        enforcing=0,
        selector=selector_text(builders.selector_labels(agent)),
        current_replicas=int(dep_status.get("replicas") or 0),
    )
    try:
        revision = runtime.redis.revision(max_age=_shared_age(runtime))
        enforcing = agent_enforcing_replicas(
            agent.agent_id, revision or "", runtime.redis.enforcers(max_age=_shared_age(runtime))
        )
    except RedisAdminError as exc:
        return replace(seen, redis_error=str(exc))
    return replace(
        seen, policy_revision=revision, enforcing=enforcing, inbox=_inbox(runtime, agent.agent_id)
    )


def _inbox(runtime: Runtime, agent_id: str) -> InboxStatus | None:
    """Measure the agent's inbox backlog and set its gauges; None when Redis did not answer."""
    try:
        backlog = runtime.redis.inbox_backlog(agent_id)
    except RedisAdminError as exc:
        runtime.metrics.redis_errors.inc()
        log.warning("cannot measure the inbox of %s: %s", agent_id, exc)
        return None
    age = backlog.oldest_age_seconds(now_ms=int(time.time() * 1000))
    runtime.metrics.inbox(
        agent_id, messages=backlog.messages, pending=backlog.pending, oldest_age=age
    )
    try:
        dead = runtime.redis.dead_letter_count(agent_id)
    except RedisAdminError as exc:
        runtime.metrics.redis_errors.inc()
        log.warning("cannot count the dead letters of %s: %s", agent_id, exc)
    else:
        runtime.metrics.agent_gauge(runtime.metrics.dead_letters, agent_id, dead)
    return InboxStatus(messages=backlog.messages, pending=backlog.pending, oldest_age_seconds=age)


def delete_agent(
    *, body: Mapping[str, Any], meta: Mapping[str, Any], memo: Any, logger: Any, **_: Any
) -> None:
    """The finalizer: the Redis side of the agent goes; owned objects go by owner reference."""
    runtime = _runtime(memo)
    namespace, name = meta.get("namespace") or "default", meta.get("name")
    agent_id = f"{namespace}/{name}"
    delete_data = (body.get("spec") or {}).get("deletionPolicy") == "Delete"
    runtime.provisioned.pop(agent_id, None)
    runtime.redis.forget_inbox(agent_id)
    runtime.metrics.forget_agent(agent_id)
    try:
        deleted = runtime.redis.remove_agent(agent_id, delete_data=delete_data)
    except RedisAdminError as exc:
        runtime.metrics.redis_errors.inc()
        raise kopf.TemporaryError(str(exc), delay=runtime.config.retry_seconds) from None
    runtime.metrics.reconciles.labels("Agent", "deleted").inc()
    logger.info(
        "removed %s from Redis (ACL user, registry entry%s)",
        agent_id,
        f", {deleted} keys" if delete_data else "",
    )


def keep_audit(
    *, meta: Mapping[str, Any], status: Mapping[str, Any], memo: Any, patch: kopf.Patch, **_: Any
) -> None:
    """Checkpoint the agent's audit trail, archive and trim what its policy's retention no
    longer keeps in Redis, and report ``status.audit``."""
    runtime = _runtime(memo)
    agent_id = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
    archive = runtime.config.audit_archive
    try:
        document = runtime.redis.published_policy(max_age=_shared_age(runtime))
        retention = effective_policy(document, agent_id).audit.retention if document else None
        kept = runtime.redis.keep_audit(
            agent_id, runtime.anchor, retention=retention, archive=archive
        )
    except RedisAdminError as exc:
        runtime.metrics.redis_errors.inc()
        log.warning("cannot checkpoint the audit trail of %s: %s", agent_id, exc)
        return
    except OSError as exc:
        runtime.metrics.audit_rounds.labels("archive_failed").inc()
        log.error("cannot archive the audit trail of %s in %s: %s", agent_id, archive, exc)
        fresh = audit_unarchived(status, str(exc))
    else:
        fresh = audit_status(kept, retention=retention, archiving=archive is not None)
        runtime.metrics.audit_rounds.labels("tampered" if kept.problem else "intact").inc()
        runtime.metrics.agent_gauge(runtime.metrics.audit_intact, agent_id, int(not kept.problem))
        runtime.metrics.audit_archived.inc(kept.archived)
        if kept.problem and (status.get("audit") or {}).get("message") != fresh.message:
            log.error("the audit trail of %s is NOT intact: %s", agent_id, kept.problem)
    _report(patch, status, AgentStatus(audit=fresh))


# -- ExternalAgent -------------------------------------------------------------------------------


def _read_remote(
    runtime: Runtime, external: ExternalAgentManifest
) -> tuple[remotes.Remote, str | None]:
    """The external agent with its token, read from its Secret; what is missing, if anything."""
    credentials = external.spec.credentials
    if credentials is None:
        return remotes.Remote(external, None), None
    ref = credentials.secret_key_ref
    secret = runtime.kube.get_secret(external.metadata.namespace, ref.name)
    token = remotes.token_of(secret, ref.key)
    if token is not None:
        return remotes.Remote(external, token), None
    missing = f"Secret {ref.name} has no key {ref.key}" if secret else f"no Secret {ref.name}"
    return remotes.Remote(external, None), missing


def _register_external(
    runtime: Runtime, external: ExternalAgentManifest
) -> tuple[bool, str | None]:
    """Read the external agent's token, put it in discovery and hold it for the agents'
    remotes Secrets: whether it could (not when an Agent holds its id: the Agent wins), and
    what is missing of its credentials, if anything."""
    remote, missing = _read_remote(runtime, external)
    spec, namespace = external.spec, external.metadata.namespace
    if runtime.kube.get_agent(namespace, external.metadata.name) is not None or not (
        runtime.redis.ensure_external(
            external.agent_id, spec.capabilities, spec.url, spec.description
        )
    ):
        runtime.externals.pop(external.agent_id, None)
        return False, missing
    runtime.externals[external.agent_id] = remote
    return True, missing


def _name_taken_message(external: ExternalAgentManifest) -> str:
    return (
        f"{external.agent_id} is an Agent's id: an ExternalAgent needs a name of its own (it is "
        "registered once no Agent holds it)"
    )


def _registered(
    external: ExternalAgentManifest,
    conditions: list[Condition],
    missing: str | None,
    generation: int,
) -> ExternalAgentStatus:
    credentials = external.spec.credentials
    ref = credentials.secret_key_ref if credentials is not None else None
    return external_registered(
        conditions,
        credentials=f"Secret {ref.name} key {ref.key}" if ref is not None else None,
        missing=missing,
        generation=generation,
        now=_now(),
    )


def reconcile_external(
    *,
    body: Mapping[str, Any],
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    memo: Any,
    patch: kopf.Patch,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    runtime = _runtime(memo)
    generation = int(meta.get("generation") or 0)
    conditions = read_conditions(status)
    try:
        external = remotes.parse_external_body(body)
    except ManifestError as exc:
        _external_refused(
            runtime, patch, status, conditions,
            reason="InvalidSpec", message=str(exc), generation=generation,
        )  # fmt: skip
    refused = remotes.refusals(external, runtime.config)
    if refused:
        message = (
            f"refused: {'; '.join(refused)}; the version accepted before, if any, stays in force"
        )
        _external_refused(
            runtime, patch, status, conditions,
            reason="Forbidden", message=message, generation=generation,
        )  # fmt: skip
    try:
        registered, missing = _register_external(runtime, external)
    except KubeError as exc:
        _retry(runtime, exc, EXTERNAL_AGENT_KIND)
    except RedisAdminError as exc:
        runtime.metrics.redis_errors.inc()
        _retry(runtime, exc, EXTERNAL_AGENT_KIND)
    if not registered:
        message = _name_taken_message(external)
        taken = external_refused(
            conditions, "NameTaken", message, generation=generation, now=_now()
        )
        _report(patch, status, taken)
        _retry(runtime, RuntimeError(message), EXTERNAL_AGENT_KIND)
    _report(patch, status, _registered(external, conditions, missing, generation))
    runtime.metrics.reconciles.labels(EXTERNAL_AGENT_KIND, "applied").inc()
    logger.info("registered %s (%s)", external.agent_id, external.spec.url)


def _external_refused(
    runtime: Runtime,
    patch: kopf.Patch,
    status: Mapping[str, Any],
    conditions: list[Condition],
    *,
    reason: str,
    message: str,
    generation: int,
) -> NoReturn:
    """Report an invalid or refused ExternalAgent; kopf retries only when it changes."""
    _report(
        patch,
        status,
        external_refused(conditions, reason, message, generation=generation, now=_now()),
    )
    outcome = "refused" if reason == "Forbidden" else "invalid"
    runtime.metrics.reconciles.labels(EXTERNAL_AGENT_KIND, outcome).inc()
    raise kopf.PermanentError(message) from None


def refresh_external(
    *,
    body: Mapping[str, Any],
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    memo: Any,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Read the token again (a rotated one reaches the senders at their next round), keep the
    registry entry there, and report ``CredentialsReady``."""
    runtime = _runtime(memo)
    generation = int(meta.get("generation") or 0)
    if status.get("observedGeneration") != generation:
        return  # the reconcile handler has not accepted this generation
    try:
        external = remotes.parse_external_body(body)
    except ManifestError:
        return
    if remotes.refusals(external, runtime.config):
        return  # refused since (a restart with stricter settings): reported by the reconcile
    try:
        registered, missing = _register_external(runtime, external)
    except (KubeError, RedisAdminError) as exc:
        log.warning("cannot refresh external agent %s: %s", external.agent_id, exc)
        return
    conditions = read_conditions(status)
    if registered:
        _report(patch, status, _registered(external, conditions, missing, generation))
    else:  # an Agent took the name since: it wins
        message = _name_taken_message(external)
        taken = external_refused(
            conditions, "NameTaken", message, generation=generation, now=_now()
        )
        _report(patch, status, taken)


def delete_external(*, meta: Mapping[str, Any], memo: Any, logger: Any, **_: Any) -> None:
    """The finalizer: out of discovery, and its token out of every agent's remotes Secret at
    their next round."""
    runtime = _runtime(memo)
    agent_id = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
    runtime.externals.pop(agent_id, None)
    try:
        runtime.redis.remove_external(agent_id)
    except RedisAdminError as exc:
        runtime.metrics.redis_errors.inc()
        raise kopf.TemporaryError(str(exc), delay=runtime.config.retry_seconds) from None
    runtime.metrics.reconciles.labels(EXTERNAL_AGENT_KIND, "deleted").inc()
    logger.info("removed external agent %s from discovery", agent_id)


# -- GatewayPolicy -------------------------------------------------------------------------------


def policy_configmap(config: OperatorConfig, document: CompiledPolicy) -> builders.Manifest:
    """The ConfigMap mirroring the compiled policy, for people and tools without Redis access."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config.policy_configmap,
            "namespace": config.operator_namespace,
            # The chart creates this ConfigMap (so it goes with the release): keep its labels.
            "labels": {"app.kubernetes.io/component": "gateway-policy"},
        },
        "data": {
            "revision": document.revision,
            "policy.json": document.to_json().decode("utf-8"),
        },
    }


def publish_all(runtime: Runtime) -> tuple[CompiledPolicy, list[PolicyVerdict]]:
    """Compile every GatewayPolicy and publish the document when its revision changed."""
    with runtime.policy_lock:
        bodies = runtime.kube.list_gateway_policies(runtime.config.namespaces)
        published = runtime.redis.published_policy()
        document, verdicts = compile_cluster(bodies, published)
        if published is None or published.revision != document.revision:
            runtime.redis.publish(document)
            runtime.metrics.policy_publishes.inc()
            log.info(
                "published gateway policy revision %s (%d policies)",
                document.revision,
                len(document.policies),
            )
        runtime.published_revision = document.revision
        config = runtime.config
        current = runtime.kube.get_config_map(config.operator_namespace, config.policy_configmap)
        runtime.kube.apply(policy_configmap(config, document), current)
        runtime.metrics.invalid_policies.set(sum(1 for v in verdicts if not v.valid))
        return document, verdicts


def reconcile_policy(
    *,
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    memo: Any,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    runtime = _runtime(memo)
    generation = int(meta.get("generation") or 0)
    try:
        document, verdicts = publish_all(runtime)
    except (RedisAdminError, KubeError) as exc:
        runtime.metrics.reconciles.labels("GatewayPolicy", "retry").inc()
        raise kopf.TemporaryError(str(exc), delay=runtime.config.retry_seconds) from None
    key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
    verdict = next((v for v in verdicts if v.key == key), None)
    fresh = policy_reconciled(
        read_conditions(status),
        verdict,
        revision=document.revision,
        generation=generation,
        now=_now(),
    )
    _report(patch, status, fresh)
    outcome = "applied" if verdict is None or verdict.valid else "invalid"
    runtime.metrics.reconciles.labels("GatewayPolicy", outcome).inc()


def delete_policy(*, memo: Any, **_: Any) -> None:
    """A policy is being deleted: recompile without it before its finalizer goes (the status
    timer needs the finalizer anyway, so the recompile is retried until it succeeds)."""
    runtime = _runtime(memo)
    try:
        publish_all(runtime)
    except (RedisAdminError, KubeError) as exc:
        raise kopf.TemporaryError(str(exc), delay=runtime.config.retry_seconds) from None


def refresh_policy(
    *, meta: Mapping[str, Any], status: Mapping[str, Any], memo: Any, patch: kopf.Patch, **_: Any
) -> None:
    """Report the revision in force, the agents the policy selects and their enforcing
    replicas."""
    runtime = _runtime(memo)
    try:
        age = _shared_age(runtime)
        document = runtime.redis.published_policy(max_age=age)
        reports = runtime.redis.enforcers(max_age=age)
        registered = runtime.redis.registered_agents(max_age=age)
    except RedisAdminError as exc:
        runtime.metrics.redis_errors.inc()
        log.warning("cannot refresh policy status: %s", exc)
        return
    if document is None:
        return
    key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
    reach = enforcement(document, key, enforcers=reports, registered=registered)
    fresh = policy_refreshed(
        revision=document.revision,
        selected_agents=reach.selected_agents,
        enforced_by=reach.enforcing_replicas,
    )
    _report(patch, status, fresh)


# -- a restarted or replaced Redis -----------------------------------------------------------


def recover_server(runtime: Runtime) -> Repair:
    """Probe Redis and put back what it lost (:mod:`mas_control.recovery`): the library, the users
    and registry entries of the agents reconciled so far, and the policy (compiled from the
    GatewayPolicies again). Agents not reconciled since the operator started come back through
    their own reconcile, which kopf retries while Redis is down."""
    agents = dict(runtime.provisioned)
    published = runtime.published_revision
    facts, repair = runtime.redis.plan_repair(runtime.watch, agents, published)
    runtime.redis.repair(repair, agents)
    if repair:  # a server that lost anything lost the external agents' entries too
        for remote in list(runtime.externals.values()):
            spec = remote.external.spec
            runtime.redis.ensure_external(
                remote.external.agent_id, spec.capabilities, spec.url, spec.description
            )
    if repair or published is None:  # none published yet: Redis was down at start-up
        publish_all(runtime)
    runtime.watch.repaired(facts, repair)
    if repair:
        runtime.metrics.redis_recoveries.inc()
        log.warning("Redis provisioned again: %s", repair.why)
    return repair


def _recover_until_stopped(runtime: Runtime) -> None:
    """The recovery thread: :func:`recover_server` every ``PROBE_SECONDS`` until cleanup."""
    while not runtime.stopping.wait(PROBE_SECONDS):
        try:
            recover_server(runtime)
        except (RedisAdminError, KubeError) as exc:
            log.debug("Redis recovery probe: %s", exc)


# -- start-up and registration -------------------------------------------------------------------


def start(config: OperatorConfig, metrics: OperatorMetrics, memo: Any, logger: Any) -> None:
    """Connect, load (or create) the trust anchor, publish the policies, and start the recovery
    thread, which also publishes them as soon as Redis answers if it does not yet (the chart
    starts both together, and its Redis waits for its volume)."""
    kube = KubeApi(load_client())
    anchor = load_or_create_anchor(
        kube, namespace=config.operator_namespace, name=config.anchor_secret
    )
    runtime = Runtime(config, kube, RedisAdmin(config.redis_url), anchor, metrics, threading.Lock())
    memo.runtime = runtime
    logger.info("trust anchor %s; %r", anchor.kid, config)
    try:
        publish_all(runtime)
    except (RedisAdminError, KubeError) as exc:
        logger.error("gateway policies not published yet: %s", exc)
    threading.Thread(
        target=_recover_until_stopped, args=(runtime,), name="redis-recovery", daemon=True
    ).start()


def register(
    registry: kopf.OperatorRegistry, config: OperatorConfig, metrics: OperatorMetrics
) -> None:
    """Add every handler to ``registry``."""

    kopf.on.login(registry=registry)(login)

    @kopf.on.startup(registry=registry)
    def startup(memo: Any, logger: Any, **_: Any) -> None:
        start(config, metrics, memo, logger)

    @kopf.on.cleanup(registry=registry)
    def cleanup(memo: Any, **_: Any) -> None:
        runtime = getattr(memo, "runtime", None)
        if runtime is not None:
            runtime.stopping.set()
            runtime.redis.close()

    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*AGENTS, registry=registry, id="reconcile")(reconcile_agent)
        on(*POLICIES, registry=registry, id="reconcile")(reconcile_policy)
    kopf.on.delete(*AGENTS, registry=registry, id="finalize")(delete_agent)
    kopf.on.delete(*POLICIES, registry=registry, id="finalize")(delete_policy)
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*EXTERNALS, registry=registry, id="reconcile")(reconcile_external)
    kopf.on.delete(*EXTERNALS, registry=registry, id="finalize")(delete_external)
    interval = config.status_interval_seconds
    kopf.timer(*AGENTS, registry=registry, id="status", interval=interval)(refresh_agent)
    kopf.timer(*POLICIES, registry=registry, id="status", interval=interval)(refresh_policy)
    kopf.timer(*EXTERNALS, registry=registry, id="status", interval=interval)(refresh_external)
    kopf.timer(*AGENTS, registry=registry, id="audit", interval=config.audit_checkpoint_seconds)(
        keep_audit
    )
