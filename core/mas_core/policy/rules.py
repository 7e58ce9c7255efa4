"""Authorization rules: who may send which message types to whom. Pure; no I/O.

A rule matches a message when its ``from`` matches the sender (an agent-id glob, or a role the
sender holds; empty means anyone), its ``to`` matches the target (an agent-id glob, or a
capability the target has; empty means anyone) and one of its ``types`` globs matches the
message type. Deny wins over allow; with no matching rule the message is denied.

Used by the sidecar on send (the sender's checks) and on receive (the receiver re-checks with
the sender's verified identity), and by discovery filtering.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import translate
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from mas_core.schema import ResourceModel

_GLOB = re.compile(
    r"^(\*|[a-z0-9*]([-a-z0-9*]{0,61}[a-z0-9*])?)(/(\*|[a-z0-9*]([-a-z0-9*]{0,61}[a-z0-9*])?))?$"
)
_TYPE_GLOB = re.compile(r"^[A-Za-z0-9_.:/*?-]{1,128}$")


def _agent_glob(value: str) -> str:
    if not _GLOB.match(value):
        raise ValueError(
            f"{value!r} is not an agent pattern: 'name', 'namespace/name', '*' or globs of them"
        )
    return value


def _type_glob(value: str) -> str:
    if not _TYPE_GLOB.match(value):
        raise ValueError(f"{value!r} is not a message-type pattern (A-Za-z0-9_.:/- and * ?)")
    return value


# The regular expressions also go into the JSON schema, from which the Kubernetes CRDs are made.
AgentGlob = Annotated[
    str, AfterValidator(_agent_glob), Field(json_schema_extra={"pattern": _GLOB.pattern})
]
TypeGlob = Annotated[
    str, AfterValidator(_type_glob), Field(json_schema_extra={"pattern": _TYPE_GLOB.pattern})
]


class Senders(ResourceModel):
    """``from``: agents by id pattern, or by role; both empty means any sender."""

    agents: list[AgentGlob] = Field(
        default_factory=list,
        max_length=256,
        description="Sender agent-id patterns: name, namespace/name, '*' or globs of them.",
    )
    roles: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(
        default_factory=list,
        max_length=64,
        description="Roles of which the sender must hold one (from its identity token).",
    )


class Targets(ResourceModel):
    """``to``: agents by id pattern, or by capability; both empty means any target."""

    agents: list[AgentGlob] = Field(
        default_factory=list,
        max_length=256,
        description="Target agent-id patterns: name, namespace/name, '*' or globs of them.",
    )
    capabilities: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(
        default_factory=list,
        max_length=64,
        description="Capabilities of which the target must have one.",
    )


class Rule(ResourceModel):
    """One allow or deny rule."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")] = Field(
        description="The rule's name (a DNS-1123 label), shown in decisions and audit entries."
    )
    action: Literal["allow", "deny"] = Field(
        description="allow or deny the matching messages; deny wins over allow."
    )
    senders: Senders = Field(
        default_factory=Senders,
        alias="from",
        description="The senders the rule matches; empty matches any sender.",
    )
    targets: Targets = Field(
        default_factory=Targets,
        alias="to",
        description="The targets the rule matches; empty matches any target.",
    )
    types: list[TypeGlob] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=256,
        description="Message-type globs the rule matches (A-Za-z0-9_.:/- and * ?).",
    )


def qualify_glob(pattern: str, namespace: str) -> str:
    """``name`` patterns are relative to the policy's namespace; ``ns/name`` ones are not."""
    return pattern if "/" in pattern else f"{namespace}/{pattern}"


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(translate(pattern))


def glob_match(patterns: Iterable[str], value: str) -> bool:
    """True when any shell-style pattern matches ``value`` in full."""
    return any(_compiled(p).match(value) for p in patterns)


@dataclass(frozen=True)
class Party:
    """A sender or target as a rule sees it."""

    agent_id: str
    labels: frozenset[str] = frozenset()  # roles of a sender, capabilities of a target


@dataclass(frozen=True)
class Decision:
    """The outcome of authorization; ``rule`` is ``policy/rule`` of the deciding rule."""

    allowed: bool
    rule: str | None
    reason: str


@dataclass(frozen=True)
class ScopedRule:
    """A rule with the policy it came from, its agent patterns already qualified."""

    policy: str
    rule: Rule

    def matches(self, sender: Party, target: Party, message_type: str) -> bool:
        rule = self.rule
        return (
            _side_matches(rule.senders.agents, rule.senders.roles, sender)
            and _side_matches(rule.targets.agents, rule.targets.capabilities, target)
            and glob_match(rule.types, message_type)
        )


def _side_matches(patterns: Sequence[str], labels: Sequence[str], party: Party) -> bool:
    """An empty side matches anyone; else an id pattern or a shared label must match."""
    if not patterns and not labels:
        return True
    return glob_match(patterns, party.agent_id) or not party.labels.isdisjoint(labels)


def authorize(
    rules: Sequence[ScopedRule], sender: Party, target: Party, message_type: str
) -> Decision:
    """Deny wins; an allow is needed; nothing matching means deny."""
    allowed_by: str | None = None
    for scoped in rules:
        if not scoped.matches(sender, target, message_type):
            continue
        name = f"{scoped.policy}/{scoped.rule.name}"
        if scoped.rule.action == "deny":
            return Decision(False, name, f"denied by rule {name}")
        allowed_by = allowed_by or name
    if allowed_by is None:
        return Decision(
            False,
            None,
            f"no rule allows {sender.agent_id} to send {message_type!r} to {target.agent_id}",
        )
    return Decision(True, allowed_by, f"allowed by rule {allowed_by}")


def may_message(rules: Sequence[ScopedRule], sender: Party, target: Party) -> bool:
    """True when some message type from ``sender`` to ``target`` could be allowed.

    Used to restrict discovery: an agent sees only the agents it may send something to.
    """
    matching = [
        scoped.rule
        for scoped in rules
        if _side_matches(scoped.rule.senders.agents, scoped.rule.senders.roles, sender)
        and _side_matches(scoped.rule.targets.agents, scoped.rule.targets.capabilities, target)
    ]
    if any(rule.action == "deny" and "*" in rule.types for rule in matching):
        return False
    return any(rule.action == "allow" for rule in matching)
