"""Noticing that the Redis server lost what the control plane keeps on it, and putting it back.

The control plane — the operator and ``mas up`` — keeps on the agents' Redis: the function
library (:mod:`mas_core.functions`), one ACL user per agent (:mod:`mas_core.acl`), the compiled
gateway policy (:mod:`mas_control.provision`) and the agents' registry entries
(:mod:`mas_core.registry_entries`). ACL users live in the server's memory only (unless it keeps an
ACL file), and without persistence everything else goes too, so a restarted or replaced server
refuses every sidecar until the control plane notices. It looks every ``PROBE_SECONDS``, in a few
cheap commands (:func:`probe`): the server's ``run_id`` (``INFO server``: a new one means another
server process), the library's version, which of the expected ACL users exist (``ACL USERS``), the
policy revision and which registry entries are there. :func:`plan_repair`, pure, says what to
do again; the caller's applier does it (idempotent writes) and only then records the facts as
seen (:meth:`ServerWatch.repaired`), so a repair cut short by another outage is planned again.

Used by the operator's recovery thread and by ``mas up``'s supervisor.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import redis

from mas_control.acl_file import save_acl_users
from mas_control.provision import apply_acl_user, ensure_functions, publish_policy, register_agent
from mas_core.acl import acl_username
from mas_core.functions import VERSION
from mas_core.keys import POLICY_REVISION, REGISTRY_AGENTS
from mas_core.policy.document import CompiledPolicy

PROBE_SECONDS = 1.0  # how often the control plane looks: the longest a lost server goes unnoticed


@dataclass(frozen=True)
class ServerFacts:
    """What one probe found on the server."""

    run_id: str
    functions_version: str | None  # None: no mas library
    missing_users: frozenset[str]  # agent ids whose ACL user is not there
    policy_revision: str | None
    missing_entries: frozenset[str]  # agent ids whose registry entry is not there


@dataclass(frozen=True)
class Repair:
    """What to set up again on the server, and why (empty: nothing)."""

    functions: bool = False
    users: frozenset[str] = frozenset()  # agent ids
    policy: bool = False
    entries: frozenset[str] = frozenset()  # agent ids
    why: str = ""

    def __bool__(self) -> bool:
        return self.functions or bool(self.users) or self.policy or bool(self.entries)


def probe(client: redis.Redis, agents: Collection[str], *, policy: bool = True) -> ServerFacts:
    """The facts :func:`plan_repair` needs, for the expected ``agents``: four commands in one
    round trip (``policy``: whether the control plane publishes a policy, else its revision is
    not read)."""
    ordered = sorted(agents)
    with client.pipeline(transaction=False) as pipe:
        pipe.info("server")
        pipe.fcall("mas_version", 0)
        pipe.acl_users()
        pipe.get(POLICY_REVISION)
        if ordered:
            pipe.hmget(REGISTRY_AGENTS, ordered)
        answers = pipe.execute(raise_on_error=False)
    failure = next((a for a in answers if isinstance(a, Exception)), None)
    if failure is not None and failure is not answers[1]:  # only the library may be missing
        raise failure
    info, version, users, revision = answers[:4]
    entries = answers[4] if ordered else []
    present = {user.decode() if isinstance(user, bytes) else user for user in users}
    return ServerFacts(
        run_id=str(info.get("run_id", "")),
        functions_version=version.decode() if isinstance(version, bytes) else None,
        missing_users=frozenset(a for a in ordered if acl_username(a) not in present),
        policy_revision=revision.decode() if policy and revision is not None else None,
        missing_entries=frozenset(
            a for a, entry in zip(ordered, entries, strict=True) if entry is None
        ),
    )


def plan_repair(
    last: ServerFacts | None, now: ServerFacts, *, policy_revision: str | None
) -> Repair:
    """What to set up again, given the facts seen at the last repair (None: none yet), the
    facts now, and the revision of the policy the control plane publishes (None: none yet).

    A new ``run_id`` or a missing library means another server, or one that lost its data:
    everything is set up again. Otherwise only what is missing: users, registry entries, the
    policy (a revision other than the one published)."""
    every_user = now.missing_users
    if last is not None and last.run_id != now.run_id:
        why = f"the server was restarted or replaced (run_id {last.run_id} -> {now.run_id})"
        return Repair(True, every_user, policy_revision is not None, now.missing_entries, why)
    if now.functions_version != VERSION:
        why = "the server has no mas function library (or another version)"
        return Repair(True, every_user, policy_revision is not None, now.missing_entries, why)
    stale_policy = policy_revision is not None and now.policy_revision != policy_revision
    reasons = [
        f"{len(now.missing_users)} ACL users missing" if now.missing_users else "",
        f"{len(now.missing_entries)} registry entries missing" if now.missing_entries else "",
        "the policy document is missing or stale" if stale_policy else "",
    ]
    return Repair(
        False,
        now.missing_users,
        stale_policy,
        now.missing_entries,
        "; ".join(reason for reason in reasons if reason),
    )


@dataclass(frozen=True)
class Provisioned:
    """What the control plane keeps on the server for each agent, to put back."""

    password: str  # of its ACL user
    capabilities: Sequence[str]
    roles: Sequence[str]


def apply_repair(
    client: redis.Redis,
    repair: Repair,
    agents: Mapping[str, Provisioned],
    policy: CompiledPolicy | None,
) -> None:
    """Do ``repair`` (idempotent writes): the library, then the users (saved to the server's
    ACL file when it keeps one), registry entries and policy it names (of the agents in
    ``agents``; ``policy`` is the document to publish)."""
    if repair.functions:
        ensure_functions(client)
    users = sorted(repair.users & agents.keys())
    for agent_id in users:
        apply_acl_user(client, agent_id, agents[agent_id].password)
    if users:
        save_acl_users(client)
    for agent_id in sorted(repair.entries & agents.keys()):
        wanted = agents[agent_id]
        register_agent(client, agent_id, wanted.capabilities, wanted.roles)
    if repair.policy and policy is not None:
        publish_policy(client, policy)


class ServerWatch:
    """The facts of the last repaired (or healthy) server, for the next :func:`plan_repair`."""

    def __init__(self) -> None:
        self.last: ServerFacts | None = None
        self.repairs = 0

    def plan(
        self, client: redis.Redis, agents: Collection[str], *, policy_revision: str | None
    ) -> tuple[ServerFacts, Repair]:
        """Probe the server and plan; apply the repair, then call :meth:`repaired`."""
        facts = probe(client, agents, policy=policy_revision is not None)
        return facts, plan_repair(self.last, facts, policy_revision=policy_revision)

    def repaired(self, facts: ServerFacts, repair: Repair) -> None:
        """The repair planned with ``facts`` is done (or nothing was to do)."""
        self.last = facts
        if repair:
            self.repairs += 1
