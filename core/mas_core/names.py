"""Agent identifiers: ``namespace/name``, both parts DNS-1123 labels.

A bare ``name`` means "in the sender's namespace"; local mode runs everything in ``default``.
Names are DNS labels because the operator turns them into Deployment, Secret and Redis ACL
user names. Used by the sidecar (to resolve targets), the ACL rules, manifests, the operator
and the ``mas`` command.
"""

from __future__ import annotations

import re

DEFAULT_NAMESPACE = "default"
LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class InvalidAgentIdError(ValueError):
    """The string is not a valid agent id."""


def is_label(value: str) -> bool:
    """True when ``value`` is a DNS-1123 label (lowercase alphanumerics and '-', ≤ 63)."""
    return bool(LABEL.match(value))


def qualify(agent: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The full ``namespace/name`` id of ``agent``, qualifying a bare name with ``namespace``.

    Raises :class:`InvalidAgentIdError` when either part is not a DNS-1123 label.
    """
    ns, sep, name = agent.partition("/")
    if not sep:
        ns, name = namespace, agent
    if not is_label(ns) or not is_label(name):
        raise InvalidAgentIdError(
            f"agent id {agent[:80]!r} must be 'name' or 'namespace/name', each part a DNS-1123 "
            "label: lowercase letters, digits and '-', at most 63 characters"
        )
    return f"{ns}/{name}"


def namespace_of(agent_id: str) -> str:
    """The namespace part of a full agent id."""
    return agent_id.partition("/")[0]
