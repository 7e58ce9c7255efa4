"""The operator's administrative Redis connection: ACL users, registry, policy, agent data,
audit checkpoints, inbox backlogs.

Every call is short and synchronous (kopf runs the handlers in worker threads). The status
timers of every Agent and GatewayPolicy read the same few keys; they pass ``max_age`` and share
one read per key instead of each reading the whole enforcers hash or policy document. Errors become
:class:`RedisAdminError`, whose message never carries the URL's password; the handlers report it
in a status condition and kopf retries. The ACL rules, registry format and policy keys are the
shared ones of :mod:`mas_core.acl`, :mod:`mas_core.registry_entries` and
:mod:`mas_control.provision`, so the operator and ``mas up`` create the same users and publish the
same documents. After it creates or deletes a user it asks the server to save its users (``ACL
SAVE``): the chart's embedded Redis keeps them in an ACL file on its volume, so they survive its
restarts (:mod:`mas_control.acl_file`).

Under Sentinel (a ``redis+sentinel://`` URL, :mod:`mas_core.redis_clients`) the client follows the
primary; ACL users, which Redis does not replicate, are applied to (and removed from, and saved
on) the primary and every replica the sentinels know, so a promoted replica already has them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis
from pydantic import ValidationError

from mas_control.acl_file import save_acl_users
from mas_control.audit_keeper import Kept
from mas_control.audit_rounds import TrailRounds
from mas_control.backlog import InboxBacklog, InboxMeter
from mas_control.provision import (
    apply_acl_user,
    delete_acl_user,
    enforcers,
    ensure_functions,
    forget_agent,
    forget_external_agent,
    publish_policy,
    register_agent,
    register_external_agent,
)
from mas_control.recovery import Provisioned, Repair, ServerFacts, ServerWatch, apply_repair
from mas_core import redis_clients, sentinel
from mas_core.acl import masked_url
from mas_core.identity.credentials import Anchor
from mas_core.keys import (
    POLICY_DOCUMENT,
    POLICY_REVISION,
    REGISTRY_AGENTS,
    AgentKeys,
    audit_checkpoint,
)
from mas_core.policy.document import AuditRetention, CompiledPolicy

_DELETE_BATCH = 500
_TIMEOUTS = {"socket_timeout": 5, "socket_connect_timeout": 3}
T = TypeVar("T")


class RedisAdminError(RuntimeError):
    """Redis could not be reached or refused an administrative command."""


class RedisAdmin:
    """One administrative client of the agents' Redis."""

    def __init__(self, url: str) -> None:
        self._where = masked_url(url)
        self._url = url
        self._client = redis_clients.client(url, **_TIMEOUTS)
        self._lock = threading.Lock()
        self._recent: dict[str, tuple[float, Any]] = {}
        self._meters: dict[str, InboxMeter] = {}
        self._trails = TrailRounds()

    def __repr__(self) -> str:
        return f"RedisAdmin({self._where!r})"

    def close(self) -> None:
        self._client.close()

    def _shared(self, name: str, max_age: float, read: Callable[[], T]) -> T:
        """``read()``, or its result from less than ``max_age`` seconds ago."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent.get(name)
        if recent is not None and now - recent[0] < max_age:
            value: T = recent[1]
            return value
        value = read()
        with self._lock:
            self._recent[name] = (now, value)
        return value

    def _fail(self, what: str, exc: redis.RedisError) -> RedisAdminError:
        return RedisAdminError(f"Redis at {self._where}: {what}: {exc}")

    def ensure_agent(
        self, agent_id: str, password: str, capabilities: Sequence[str], roles: Sequence[str]
    ) -> None:
        """The agent's least-privilege ACL user (with ``password``), its registry entry, and
        the function library its sidecars call."""
        try:
            ensure_functions(self._client)
            self._on_every_node(lambda node: _set_user(node, agent_id, password))
            register_agent(self._client, agent_id, capabilities, roles)
        except redis.RedisError as exc:
            raise self._fail(f"cannot set up {agent_id}", exc) from None

    def remove_agent(self, agent_id: str, *, delete_data: bool) -> int:
        """Drop the agent's ACL user (disconnecting its sidecars) and registry entry; with
        ``delete_data`` also every key of the agent (streams, state, audit) and the control
        plane's checkpoint of its audit trail (its archive stays). Keys deleted."""
        try:
            self._on_every_node(lambda node: _drop_user(node, agent_id))
            forget_agent(self._client, agent_id)
            if not delete_data:
                return 0
            deleted = int(self._client.unlink(audit_checkpoint(agent_id)))
            batch: list[bytes] = []
            for key in self._client.scan_iter(match=AgentKeys(agent_id).every_key, count=500):
                batch.append(key)
                if len(batch) >= _DELETE_BATCH:
                    deleted += int(self._client.unlink(*batch))
                    batch = []
            if batch:
                deleted += int(self._client.unlink(*batch))
            return deleted
        except redis.RedisError as exc:
            raise self._fail(f"cannot remove {agent_id}", exc) from None

    def ensure_external(
        self, agent_id: str, capabilities: Sequence[str], url: str, description: str
    ) -> bool:
        """An external A2A agent's registry entry, discovery metadata and lease (idempotent);
        False when an agent of mas holds the id (nothing is written)."""
        try:
            return register_external_agent(self._client, agent_id, capabilities, url, description)
        except redis.RedisError as exc:
            raise self._fail(f"cannot register {agent_id}", exc) from None

    def remove_external(self, agent_id: str) -> None:
        """Take an external agent out of discovery (not an Agent that holds its id now)."""
        try:
            forget_external_agent(self._client, agent_id)
        except redis.RedisError as exc:
            raise self._fail(f"cannot remove {agent_id}", exc) from None

    def _on_every_node(self, act: Callable[[redis.Redis], None]) -> None:
        """``act`` on the server, or under Sentinel on the primary and each replica."""
        if not sentinel.is_sentinel_url(self._url):
            act(self._client)
            return
        nodes = redis_clients.data_nodes(self._url, **_TIMEOUTS)
        try:
            for node in nodes:
                act(node)
        finally:
            for node in nodes:
                node.close()

    def plan_repair(
        self, watch: ServerWatch, agents: Mapping[str, Provisioned], revision: str | None
    ) -> tuple[ServerFacts, Repair]:
        """Probe the server: what it lost of what the control plane keeps there (see
        :mod:`mas_control.recovery`); ``revision``: of the policy published last."""
        try:
            return watch.plan(self._client, agents, policy_revision=revision)
        except redis.RedisError as exc:
            raise self._fail("cannot probe the server", exc) from None

    def repair(self, repair: Repair, agents: Mapping[str, Provisioned]) -> None:
        """Put back the library, users and registry entries ``repair`` names (the policy is
        compiled and published by the caller)."""
        try:
            apply_repair(self._client, repair, agents, None)
        except redis.RedisError as exc:
            raise self._fail("cannot provision the server again", exc) from None

    def keep_audit(
        self,
        agent_id: str,
        anchor: Anchor,
        *,
        retention: AuditRetention | None,
        archive: Path | None,
    ) -> Kept:
        """One round of the control plane's keeper of ``agent_id``'s audit trail: checkpoint,
        and archive-then-trim past ``retention`` (:func:`mas_control.audit_keeper.keep_trail`),
        passed over while nothing was added (:mod:`mas_control.audit_rounds`); OSError when the
        archive cannot be written."""
        try:
            return self._trails.keep(
                self._client, agent_id, anchor, retention=retention, archive=archive
            )
        except redis.RedisError as exc:
            raise self._fail(f"cannot checkpoint the audit trail of {agent_id}", exc) from None

    def inbox_backlog(self, agent_id: str) -> InboxBacklog:
        """One round of measuring the agent's inbox backlog (:mod:`mas_control.backlog`: a few
        commands per sender stream, at most ``MAX_STREAMS`` streams a round)."""
        with self._lock:
            meter = self._meters.setdefault(agent_id, InboxMeter(agent_id))
        try:
            return meter.measure(self._client)
        except redis.RedisError as exc:
            raise self._fail(f"cannot measure the inbox of {agent_id}", exc) from None

    def dead_letter_count(self, agent_id: str) -> int:
        """How many messages the agent's dead-letter stream holds (one ``XLEN``)."""
        try:
            return int(self._client.xlen(AgentKeys(agent_id).dlq))
        except redis.RedisError as exc:
            raise self._fail(f"cannot count the dead letters of {agent_id}", exc) from None

    def forget_inbox(self, agent_id: str) -> None:
        """Drop what the backlog and audit rounds kept of a deleted agent."""
        with self._lock:
            self._meters.pop(agent_id, None)
        self._trails.forget(agent_id)

    def published_policy(self, max_age: float = 0) -> CompiledPolicy | None:
        """The document in force; None when there is none or it does not parse."""
        return self._shared("document", max_age, self._read_policy)

    def _read_policy(self) -> CompiledPolicy | None:
        try:
            raw = self._client.get(POLICY_DOCUMENT)
        except redis.RedisError as exc:
            raise self._fail("cannot read the policy", exc) from None
        if raw is None:
            return None
        try:
            return CompiledPolicy.model_validate_json(raw)
        except ValidationError:
            return None

    def revision(self, max_age: float = 0) -> str | None:
        """The revision of the document in force (one small read, for per-agent status)."""
        return self._shared("revision", max_age, self._read_revision)

    def _read_revision(self) -> str | None:
        try:
            raw = self._client.get(POLICY_REVISION)
        except redis.RedisError as exc:
            raise self._fail("cannot read the policy revision", exc) from None
        return raw.decode() if raw is not None else None

    def publish(self, document: CompiledPolicy) -> None:
        try:
            publish_policy(self._client, document)
        except redis.RedisError as exc:
            raise self._fail("cannot publish the policy", exc) from None

    def enforcers(self, max_age: float = 0) -> dict[str, str]:
        """``<agent id>/<replica>`` -> the policy revision that sidecar enforces."""
        return self._shared("enforcers", max_age, self._read_enforcers)

    def _read_enforcers(self) -> dict[str, str]:
        try:
            return enforcers(self._client)
        except redis.RedisError as exc:
            raise self._fail("cannot read the policy reports", exc) from None

    def registered_agents(self, max_age: float = 0) -> list[str]:
        return self._shared("registered", max_age, self._read_registered)

    def _read_registered(self) -> list[str]:
        try:
            return sorted(key.decode() for key in self._client.hkeys(REGISTRY_AGENTS))
        except redis.RedisError as exc:
            raise self._fail("cannot read the registry", exc) from None


def _set_user(node: redis.Redis, agent_id: str, password: str) -> None:
    apply_acl_user(node, agent_id, password)
    save_acl_users(node)


def _drop_user(node: redis.Redis, agent_id: str) -> None:
    delete_acl_user(node, agent_id)
    save_acl_users(node)
