"""External agents on the cluster: which senders' sidecars get each one's bearer token.

An ``ExternalAgent`` (an A2A agent outside mas) may name, in ``spec.credentials``, the key of a
Secret in its namespace that holds the bearer token the remote expects. Senders' sidecars read
it from ``MAS_A2A_REMOTES_DIR`` at each call (:mod:`mas_core.a2a_remotes`). On Kubernetes that
directory is the Secret ``<agent>-mas-remotes``, which the operator writes for each Agent and
mounts into its sidecar only (:mod:`mas_operator.builders`).

Least privilege decides what goes in it: the token of an external agent reaches an agent's
sidecar only when the published policy could let that agent message it
(:func:`mas_core.policy.rules.may_message`, the test discovery uses). A policy change, or a new
or removed ExternalAgent, reaches the Secret at the agent's next status round, and the kubelet
brings the files to the running sidecar without a restart. No policy, no token.

An ExternalAgent may not make the operator read an agent's credentials or a Secret of the
operator's namespace and send it to a URL of its choosing (:func:`refusals`).

Pure; used by :mod:`mas_operator.handlers`.
"""

from __future__ import annotations

from base64 import b64decode, b64encode
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mas_core.a2a_remotes import credentials_file
from mas_core.manifests import (
    API_VERSION,
    EXTERNAL_AGENT_KIND,
    AgentManifest,
    ExternalAgentManifest,
    parse_external_agent,
)
from mas_core.policy.document import CompiledPolicy, effective_policy
from mas_core.policy.rules import Party, may_message
from mas_operator import builders
from mas_operator.config import OperatorConfig


@dataclass(frozen=True)
class Remote:
    """An accepted ExternalAgent as the operator holds it: the spec in force and its token
    (None: the remote is open, or the token's Secret or key is missing)."""

    external: ExternalAgentManifest
    token: bytes | None


def parse_external_body(body: Mapping[str, Any]) -> ExternalAgentManifest:
    """The ExternalAgent resource as its model (kopf's bookkeeping dropped)."""
    meta = body.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    document = {
        "apiVersion": API_VERSION,
        "kind": EXTERNAL_AGENT_KIND,
        "metadata": {"name": meta.get("name"), "namespace": namespace},
        "spec": body.get("spec") or {},
    }
    return parse_external_agent(document, f"ExternalAgent {namespace}/{meta.get('name')}")


def refusals(external: ExternalAgentManifest, settings: OperatorConfig) -> list[str]:
    """Why the operator may not send the Secret ``spec.credentials`` names to the remote: an
    agent's credentials (``*-mas-credentials``, ``*-mas-remotes``) or any Secret of the operator's
    namespace, as for an Agent's own references (:func:`mas_operator.builders.secret_refusals`)."""
    credentials = external.spec.credentials
    if credentials is None:
        return []
    return list(
        builders.secret_refusals(
            "spec.credentials.secretKeyRef",
            credentials.secret_key_ref.name,
            external.metadata.namespace,
            settings,
            "send",
        )
    )


def token_of(secret: Mapping[str, Any] | None, key: str) -> bytes | None:
    """The value of ``key`` in ``secret`` as read from the API (None when either is missing)."""
    value = ((secret or {}).get("data") or {}).get(key)
    return b64decode(value) if isinstance(value, str) else None


def callable_tokens(
    agent: AgentManifest, remotes: Iterable[Remote], policy: CompiledPolicy | None
) -> dict[str, bytes]:
    """The tokens ``agent``'s sidecars get, by file name: those of the external agents the
    policy could let it message."""
    if policy is None:
        return {}
    rules = effective_policy(policy, agent.agent_id).rules
    sender = Party(agent.agent_id, frozenset(agent.spec.roles))
    tokens: dict[str, bytes] = {}
    for remote in remotes:
        external = remote.external
        target = Party(external.agent_id, frozenset(external.spec.capabilities))
        if remote.token is not None and may_message(rules, sender, target):
            tokens[credentials_file(external.agent_id)] = remote.token
    return tokens


def remotes_secret(
    *, agent: AgentManifest, owner_uid: str, tokens: Mapping[str, bytes]
) -> builders.Manifest:
    """The Secret ``<agent>-mas-remotes``: one key per external agent, ``<namespace>.<name>``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": builders.object_metadata(agent, builders.remotes_secret_name(agent), owner_uid),
        "type": "Opaque",
        "data": {name: b64encode(tokens[name]).decode("ascii") for name in sorted(tokens)},
    }
