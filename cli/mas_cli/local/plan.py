"""What ``mas up`` runs: for each agent replica, its sidecar and its program, with their env.

Pure functions from manifests (and the values their ``spec.env`` references get locally,
:mod:`mas_cli.local.secrets`) to :class:`ReplicaPlan` values; no process is started here (that
is :mod:`mas_cli.local.supervisor`), so what runs with which settings is unit-tested directly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mas_cli.local.secrets import EnvReferences, LocalSecrets
from mas_core.a2a_card import CARD_PATH
from mas_core.a2a_remotes import credentials_file
from mas_core.manifests import (
    CONTROL_PLANE_ENV,
    AgentManifest,
    ExternalAgentManifest,
    ManifestError,
    SecretKeySelector,
)

_PYTHON_NAMES = frozenset({"python", "python3"})


@dataclass(frozen=True)
class ReplicaPlan:
    """One replica of one agent: a sidecar and an agent program, started together."""

    agent_id: str
    name: str
    index: int
    port: int
    sidecar_env: dict[str, str]
    command: list[str]
    agent_env: dict[str, str]
    cwd: Path

    @property
    def sidecar_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def a2a_card_url(self) -> str | None:
        """Where A2A clients read the agent card of an exposed replica (None: not exposed)."""
        settings = self.sidecar_env.get("MAS_A2A")
        if settings is None:
            return None
        a2a = json.loads(settings)
        return f"http://127.0.0.1:{a2a['port']}{CARD_PATH}" if a2a["expose"] else None

    @property
    def label(self) -> str:
        """``<agent id>-<index>``, as progress lines name the replica."""
        return f"{self.agent_id}-{self.index}"

    @property
    def output_prefix(self) -> str:
        """``<name>[<index>]``, prefixed to the program's output lines."""
        return f"{self.name}[{self.index}]"

    def log_file_name(self) -> str:
        """The sidecar's log file name inside the log directory."""
        return f"{self.agent_id.replace('/', '_')}-{self.index}.sidecar.log"


def sidecar_env(agent: AgentManifest, index: int) -> dict[str, str]:
    """The ``MAS_*`` settings of replica ``index``'s sidecar. An exposed agent's replicas
    serve A2A on loopback, replica ``index`` on ``spec.a2a.port`` + ``index`` (they share the
    machine's ports)."""
    env = {
        "MAS_REPLICA_ID": f"{agent.metadata.name}-{index}",
        "MAS_CAPABILITIES": ",".join(agent.spec.capabilities),
        "MAS_ROLES": ",".join(agent.spec.roles),
        "MAS_MAX_ATTEMPTS": str(agent.spec.delivery.max_attempts),
        "MAS_LEASE_MS": str(agent.spec.delivery.lease_seconds * 1000),
    }
    a2a = agent.spec.a2a
    if a2a is not None:
        settings = a2a.model_dump(mode="json", by_alias=True)
        settings["port"] = a2a.port + index
        env["MAS_A2A"] = json.dumps(settings, separators=(",", ":"))
        env["MAS_A2A_HOST"] = "127.0.0.1"
    return env


def _secret_value(ref: SecretKeySelector, secrets: LocalSecrets, owner: str) -> str | None:
    """The value of ``ref`` from the secrets file; None for a missing ``optional`` one, and
    ManifestError (naming ``owner``, the field that refers to it) for any other missing one."""
    value = secrets.values.get((ref.name, ref.key))
    if value is None and not ref.optional:
        file = secrets.source or "DIR/.secrets"
        raise ManifestError(
            f"{owner}: Secret {ref.name} key {ref.key} has no local value: add the line "
            f"{ref.name}/{ref.key}=... to {file}"
        )
    return value


def a2a_client_keys(agent: AgentManifest, secrets: LocalSecrets) -> dict[str, str]:
    """The API key of each of ``agent``'s A2A clients, from the secrets file (``secret/key=``
    lines, like ``spec.env``'s references); ManifestError for a missing one that is not
    ``optional`` (an optional one is left out: that client cannot call)."""
    keys: dict[str, str] = {}
    if agent.spec.a2a is None:
        return keys
    for client in agent.spec.a2a.clients:
        owner = f"Agent {agent.agent_id}: spec.a2a.clients {client.name}"
        value = _secret_value(client.secret_key_ref, secrets, owner)
        if value is not None:
            keys[client.name] = value
    return keys


def external_credentials(
    externals: Sequence[ExternalAgentManifest], secrets: LocalSecrets
) -> dict[str, str]:
    """The bearer token of each external agent that names one (file name ``<namespace>.<name>``
    -> token), from the secrets file; ManifestError for a missing one that is not ``optional``."""
    tokens: dict[str, str] = {}
    for external in externals:
        if external.spec.credentials is None:
            continue
        owner = f"ExternalAgent {external.agent_id}: spec.credentials"
        value = _secret_value(external.spec.credentials.secret_key_ref, secrets, owner)
        if value is not None:
            tokens[credentials_file(external.agent_id)] = value
    return tokens


def agent_env(
    agent: AgentManifest,
    sidecar_url: str,
    index: int = 0,
    references: EnvReferences | None = None,
) -> dict[str, str]:
    """What replica ``index``'s agent program gets on top of the inherited environment.

    ``spec.env`` (its ``valueFrom`` resolved by ``references``; an optional one found nowhere
    left out), then the sidecar's URL and the agent id (``spec.env`` cannot set those, nor the
    token, which the supervisor adds), and unbuffered Python output so lines show up on the
    console as they are printed. :class:`~mas_core.manifests.ManifestError` when a reference
    cannot be resolved.
    """
    resolve = references or EnvReferences()
    env = {"PYTHONUNBUFFERED": "1"}
    for position, var in enumerate(agent.spec.env):
        if var.name in CONTROL_PLANE_ENV:
            continue
        where = f"Agent {agent.agent_id}: spec.env[{position}]"
        value = resolve.value(agent, var, f"{agent.metadata.name}-{index}", where)
        if value is not None:
            env[var.name] = value
    return {**env, "MAS_SIDECAR_URL": sidecar_url, "MAS_AGENT_ID": agent.agent_id}


def agent_command(command: list[str]) -> list[str]:
    """``spec.local.command``, with a leading ``python``/``python3`` replaced by this interpreter.

    The agent then sees the packages installed alongside ``mas`` even when that environment is
    not activated in the shell.
    """
    if command and command[0] in _PYTHON_NAMES:
        return [sys.executable, *command[1:]]
    return list(command)


def plan_replicas(
    agents: list[AgentManifest],
    directory: Path,
    ports: Iterator[int],
    references: EnvReferences | None = None,
) -> list[ReplicaPlan]:
    """Every replica of every agent, in manifest order, taking sidecar ports from ``ports``
    and the values of ``spec.env`` references from ``references``.

    Agents without ``spec.local`` are skipped (the manifest loader already rejects them).
    """
    plans = []
    for agent in agents:
        if agent.spec.local is None:
            continue
        for index in range(agent.spec.replicas):
            port = next(ports)
            plans.append(
                ReplicaPlan(
                    agent_id=agent.agent_id,
                    name=agent.metadata.name,
                    index=index,
                    port=port,
                    sidecar_env=sidecar_env(agent, index),
                    command=agent_command(agent.spec.local.command),
                    agent_env=agent_env(agent, f"http://127.0.0.1:{port}", index, references),
                    cwd=directory,
                )
            )
    return plans
