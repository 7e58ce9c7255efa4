"""Reading a directory of manifests: every ``Agent``, ``GatewayPolicy`` and ``ExternalAgent`` in
its YAML files.

Documents of other kinds and other API groups are skipped; each document is validated with the
models of :mod:`mas_core.manifests`, and any problem is raised as one
:class:`~mas_core.manifests.ManifestError` naming the file (and the document, when a file holds
several) and the field path. Used by ``mas up`` (:mod:`mas_cli.up_command`), ``mas policy``
(:func:`policy_documents`: every problem, not only the first) and the tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from mas_core.manifests import (
    AGENT_KIND,
    API_VERSION,
    EXTERNAL_AGENT_KIND,
    GROUP,
    MAX_LOCAL_REPLICAS,
    POLICY_KIND,
    AgentManifest,
    ExternalAgentManifest,
    GatewayPolicyManifest,
    ManifestError,
    parse_agent,
    parse_external_agent,
    parse_policy,
)


def _documents(path: Path) -> Iterator[tuple[str, Any]]:
    """Each non-empty YAML document of ``path`` with a name for error messages."""
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"{path}:{where}: invalid YAML: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from None
    for index, document in enumerate(documents):
        if document is not None:
            yield (f"{path} (document {index + 1})" if len(documents) > 1 else str(path)), document


def _kind(document: Any, source: str) -> str | None:
    """The kind of a ``mas.dev`` document; None for documents of other groups."""
    if not isinstance(document, dict):
        raise ManifestError(
            f"{source}: a manifest must be a mapping, not {type(document).__name__}"
        )
    api_version = document.get("apiVersion")
    if not isinstance(api_version, str) or api_version.partition("/")[0] != GROUP:
        return None
    if api_version != API_VERSION:
        raise ManifestError(f"{source}: apiVersion: {api_version!r} is not {API_VERSION!r}")
    kind = document.get("kind")
    return kind if isinstance(kind, str) else None


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def policy_documents(path: Path) -> tuple[list[tuple[str, Any]], list[str]]:
    """The ``GatewayPolicy`` documents of ``path`` (a YAML file, or the ``*.yaml``/``*.yml``
    files of a directory), each with its name for messages, not validated yet; and every
    problem met reading them (unreadable files, invalid YAML, a wrong ``apiVersion``)."""
    if path.is_dir():
        files = _yaml_files(path)
    elif path.is_file():
        files = [path]
    else:
        return [], [f"{path}: no such file or directory"]
    found: list[tuple[str, Any]] = []
    problems: list[str] = []
    for file in files:
        try:
            for source, document in _documents(file):
                try:
                    if _kind(document, source) == POLICY_KIND:
                        found.append((source, document))
                except ManifestError as exc:
                    problems.append(str(exc))
        except ManifestError as exc:
            problems.append(str(exc))
    return found, problems


def load_agents(directory: Path) -> list[AgentManifest]:
    """Every ``Agent`` in the ``*.yaml``/``*.yml`` files of ``directory``, runnable locally."""
    return load_directory(directory)[0]


def load_directory(directory: Path) -> tuple[list[AgentManifest], list[GatewayPolicyManifest]]:
    """Every ``Agent`` (runnable locally) and ``GatewayPolicy`` in the YAML files of ``directory``.

    Documents of other kinds and other API groups are skipped. Raises :class:`ManifestError` for
    an invalid document, a duplicate agent or policy, an ``Agent`` without
    ``spec.local.command`` or with ``spec.replicas`` outside 1 to ``MAX_LOCAL_REPLICAS``, or a
    directory holding no ``Agent`` at all.
    """
    if not directory.is_dir():
        raise ManifestError(f"{directory}: not a directory")
    files = _yaml_files(directory)
    agents: list[AgentManifest] = []
    policies: dict[str, GatewayPolicyManifest] = {}
    sources: dict[str, str] = {}
    for path in files:
        for source, document in _documents(path):
            kind = _kind(document, source)
            if kind == POLICY_KIND:
                policy = parse_policy(document, source)
                name = f"{policy.metadata.namespace}/{policy.metadata.name}"
                if name in policies:
                    raise ManifestError(f"{source}: metadata.name: policy {name} is defined twice")
                policies[name] = policy
                continue
            if kind != AGENT_KIND:
                continue
            agent = parse_agent(document, source)
            if agent.spec.local is None:
                raise ManifestError(
                    f"{source}: spec.local.command: required to run {agent.agent_id} locally"
                )
            if not 1 <= agent.spec.replicas <= MAX_LOCAL_REPLICAS:
                raise ManifestError(
                    f"{source}: spec.replicas: mas up runs 1 to {MAX_LOCAL_REPLICAS} replicas of "
                    f"an agent, not {agent.spec.replicas} (on Kubernetes only the Deployment "
                    "bounds it)"
                )
            if agent.agent_id in sources:
                raise ManifestError(
                    f"{source}: metadata.name: agent {agent.agent_id} is already defined in "
                    f"{sources[agent.agent_id]}"
                )
            sources[agent.agent_id] = source
            agents.append(agent)
    if not agents:
        raise ManifestError(f"{directory}: no {API_VERSION} Agent manifests (*.yaml, *.yml)")
    return agents, list(policies.values())


def load_external_agents(
    directory: Path, agents: Sequence[AgentManifest] = ()
) -> list[ExternalAgentManifest]:
    """Every ``ExternalAgent`` in the YAML files of ``directory``; :class:`ManifestError` for an
    invalid one, two of the same name, or one named like one of ``agents`` (its messages would
    go to the URL of whoever wrote it)."""
    taken = {agent.agent_id for agent in agents}
    found: dict[str, ExternalAgentManifest] = {}
    for path in sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml")):
        for source, document in _documents(path):
            if _kind(document, source) != EXTERNAL_AGENT_KIND:
                continue
            external = parse_external_agent(document, source)
            if external.agent_id in found:
                raise ManifestError(
                    f"{source}: metadata.name: agent {external.agent_id} is defined twice"
                )
            if external.agent_id in taken:
                raise ManifestError(
                    f"{source}: metadata.name: {external.agent_id} is already an Agent; an "
                    "ExternalAgent needs a name of its own"
                )
            found[external.agent_id] = external
    return list(found.values())
