"""All GatewayPolicies of the cluster compiled into the one document sidecars enforce.

Each policy is validated with the same model ``mas up`` and the CRD use (schema, globs, DLP
regular expressions compiled with RE2). A policy that fails keeps its **last good version in
force**: the entry of the same name in the document published before, if any, so a typo never
opens or closes traffic by itself; its status says exactly what is wrong. The compiled document
is what :func:`mas_core.policy.document.compile_policies` makes for ``mas up``.

Also counts, for a policy's status, which registered agents it selects and how many sidecar
replicas enforce the current revision. Pure; used by :mod:`mas_operator.handlers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mas_core.manifests import (
    API_VERSION,
    POLICY_KIND,
    GatewayPolicyManifest,
    ManifestError,
    parse_policy,
)
from mas_core.policy.document import CompiledPolicy, GatewayPolicySpec, compile_policies
from mas_core.policy.rules import glob_match


@dataclass(frozen=True)
class PolicyVerdict:
    """How one GatewayPolicy fared: valid or not (and why), and whether a version is in force."""

    namespace: str
    name: str
    error: str | None
    in_force: bool

    @property
    def valid(self) -> bool:
        return self.error is None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_resource(body: Mapping[str, Any]) -> GatewayPolicyManifest:
    """A GatewayPolicy resource as the operator reads it (its name, namespace and spec);
    :class:`~mas_core.manifests.ManifestError` with the exact error its status reports (every
    problem in ``problems``). Also used by ``mas policy validate``."""
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta.get("name") or ""
    document = {
        "apiVersion": API_VERSION,
        "kind": POLICY_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": body.get("spec") or {},
    }
    return parse_policy(document, f"GatewayPolicy {namespace}/{name}")


def validate_policy(body: Mapping[str, Any]) -> tuple[GatewayPolicySpec | None, str | None]:
    """The spec of a GatewayPolicy resource, or None and the exact error."""
    try:
        return parse_resource(body).spec, None
    except ManifestError as exc:
        return None, str(exc)


def compile_cluster(
    bodies: Iterable[Mapping[str, Any]], published: CompiledPolicy | None
) -> tuple[CompiledPolicy, list[PolicyVerdict]]:
    """One document from every policy in ``bodies``; invalid ones keep their version in
    ``published`` (the document in force), or stay out if they never were valid."""
    previous = {entry.name: entry.spec for entry in published.policies} if published else {}
    sources: list[tuple[str, str, GatewayPolicySpec]] = []
    verdicts: list[PolicyVerdict] = []
    for body in bodies:
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        namespace, name = meta.get("namespace") or "default", meta.get("name") or ""
        spec, error = validate_policy(body)
        if spec is None:
            spec = previous.get(f"{namespace}/{name}")
        if spec is not None:
            sources.append((namespace, name, spec))
        verdicts.append(PolicyVerdict(namespace, name, error, in_force=spec is not None))
    verdicts.sort(key=lambda verdict: verdict.key)
    return compile_policies(sources), verdicts


@dataclass(frozen=True)
class Enforcement:
    """How far the current revision has reached for one policy."""

    selected_agents: int
    enforcing_replicas: int


def enforcement(
    document: CompiledPolicy,
    policy_key: str,
    *,
    enforcers: Mapping[str, str],
    registered: Sequence[str],
) -> Enforcement:
    """Registered agents the policy ``policy_key`` selects, and their sidecar replicas that
    report ``document``'s revision (``enforcers`` maps ``<agent id>/<replica>`` to a revision).
    """
    entry = next((e for e in document.policies if e.name == policy_key), None)
    if entry is None:
        return Enforcement(0, 0)
    selected = {agent for agent in registered if glob_match(entry.spec.agents, agent)}
    enforcing = sum(
        1
        for report, revision in enforcers.items()
        if revision == document.revision and report.rpartition("/")[0] in selected
    )
    return Enforcement(len(selected), enforcing)


def agent_enforcing_replicas(agent_id: str, revision: str, enforcers: Mapping[str, str]) -> int:
    """How many of ``agent_id``'s sidecar replicas report ``revision``."""
    return sum(
        1
        for report, enforced in enforcers.items()
        if enforced == revision and report.rpartition("/")[0] == agent_id
    )
