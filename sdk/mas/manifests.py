"""The ``Agent`` and ``GatewayPolicy`` manifests (``mas.dev/v1alpha1``) and their loader.

The same YAML describes an agent to the Kubernetes operator (as a custom resource) and to local
mode (``mas up DIR``), which also reads ``spec.local``. Every model forbids unknown fields, so a
typo is an error rather than a silently ignored setting. Any problem is raised as one
:class:`ManifestError` naming the file and the field path.

Used by local mode (``mas.local``) and the command line; the operator will validate the custom
resource with the same models.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from mas.names import DEFAULT_NAMESPACE, is_label
from mas.policy.document import GatewayPolicySpec

GROUP = "mas.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
AGENT_KIND = "Agent"
POLICY_KIND = "GatewayPolicy"
MAX_LOCAL_REPLICAS = 20

_CAPABILITY = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ManifestError(ValueError):
    """A manifest file cannot be read, or a document in it is not a valid ``Agent``."""


def _label(value: str) -> str:
    if not is_label(value):
        raise ValueError(
            "must be a DNS-1123 label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return value


def _capability(value: str) -> str:
    if not _CAPABILITY.match(value):
        raise ValueError(
            "must be 1-63 characters of lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(
            "must consist of letters, digits, '_', '-' and '.', not start with a digit"
        )
    return value


Label = Annotated[str, AfterValidator(_label)]
Capability = Annotated[str, AfterValidator(_capability)]
EnvName = Annotated[str, AfterValidator(_env_name)]


class _Model(BaseModel):
    """Strict, immutable, camelCase in YAML."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class ObjectMeta(_Model):
    """``metadata``: the agent's name and namespace (``default`` when omitted)."""

    name: Label
    namespace: Label = DEFAULT_NAMESPACE
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class EnvVar(_Model):
    """One ``spec.env`` entry, given to the agent process."""

    name: EnvName
    value: str = ""


class Delivery(_Model):
    """``spec.delivery``: how the agent's sidecar redelivers and dead-letters messages."""

    max_attempts: int = Field(default=5, ge=1, le=1000)
    lease_seconds: int = Field(default=30, ge=1, le=3600)


class LocalSpec(_Model):
    """``spec.local``: how ``mas up`` runs the agent (the command runs in the manifest's DIR)."""

    command: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)


class AgentSpec(_Model):
    """``spec``: what the agent can do and how it runs."""

    capabilities: list[Capability] = Field(default_factory=list)
    roles: list[Label] = Field(default_factory=list)
    replicas: int = Field(default=1, ge=1, le=MAX_LOCAL_REPLICAS)
    image: str | None = None
    env: list[EnvVar] = Field(default_factory=list)
    delivery: Delivery = Field(default_factory=Delivery)
    local: LocalSpec | None = None


class AgentManifest(_Model):
    """One ``Agent`` document."""

    api_version: Literal["mas.dev/v1alpha1"]
    kind: Literal["Agent"]
    metadata: ObjectMeta
    spec: AgentSpec = Field(default_factory=AgentSpec)

    @property
    def agent_id(self) -> str:
        """The full ``namespace/name`` id."""
        return f"{self.metadata.namespace}/{self.metadata.name}"


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(document)"


def parse_agent(document: Any, source: str) -> AgentManifest:
    """Validate one parsed YAML document as an ``Agent``; ``source`` names it in errors."""
    try:
        return AgentManifest.model_validate(document)
    except ValidationError as exc:
        raise ManifestError(_describe(exc, source)) from None


def _describe(exc: ValidationError, source: str) -> str:
    errors = exc.errors()
    first = errors[0]
    message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    message = message.removeprefix("Value error, ")
    more = len(errors) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {_field_path(first['loc'])}: {message}{suffix}"


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


class GatewayPolicyManifest(_Model):
    """One ``GatewayPolicy`` document."""

    api_version: Literal["mas.dev/v1alpha1"]
    kind: Literal["GatewayPolicy"]
    metadata: ObjectMeta
    spec: GatewayPolicySpec = Field(default_factory=GatewayPolicySpec)


def parse_policy(document: Any, source: str) -> GatewayPolicyManifest:
    """Validate one parsed YAML document as a ``GatewayPolicy``."""
    try:
        return GatewayPolicyManifest.model_validate(document)
    except ValidationError as exc:
        raise ManifestError(_describe(exc, source)) from None


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


def load_agents(directory: Path) -> list[AgentManifest]:
    """Every ``Agent`` in the ``*.yaml``/``*.yml`` files of ``directory``, runnable locally."""
    return load_directory(directory)[0]


def load_directory(directory: Path) -> tuple[list[AgentManifest], list[GatewayPolicyManifest]]:
    """Every ``Agent`` (runnable locally) and ``GatewayPolicy`` in the YAML files of ``directory``.

    Documents of other kinds and other API groups are skipped. Raises :class:`ManifestError` for
    an invalid document, a duplicate agent or policy, an ``Agent`` without
    ``spec.local.command``, or a directory holding no ``Agent`` at all.
    """
    if not directory.is_dir():
        raise ManifestError(f"{directory}: not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
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
