"""The ``Agent``, ``GatewayPolicy`` and ``ExternalAgent`` manifests (``mas.dev/v1alpha1``):
models and validation.

The same YAML describes an agent to the Kubernetes operator (as a custom resource) and to local
mode (``mas up DIR``), which also reads ``spec.local``. Every model forbids unknown fields, so a
typo is an error rather than a silently ignored setting. Any problem is raised as one
:class:`ManifestError` naming the file and the field path.

Used by the operator (custom resources, and the CRDs' schemas), local mode and the ``mas``
command (which read them from YAML files: :mod:`mas_cli.manifest_files`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from mas_core.a2a_card import DEFAULT_MODES, DEFAULT_VERSION
from mas_core.names import DEFAULT_NAMESPACE, LABEL, is_label
from mas_core.policy.document import GatewayPolicySpec
from mas_core.schema import ResourceModel
from mas_core.sidecar_token import TOKEN_ENV, TOKEN_FILE_ENV

GROUP = "mas.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
AGENT_KIND = "Agent"
POLICY_KIND = "GatewayPolicy"
EXTERNAL_AGENT_KIND = "ExternalAgent"
MAX_LOCAL_REPLICAS = 20  # mas up's bound; on Kubernetes the Deployment's is the only one

_CAPABILITY = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

ModelT = TypeVar("ModelT", bound=ResourceModel)


class ManifestError(ValueError):
    """A manifest file cannot be read, or a document in it is not valid. Its message names the
    first problem (and how many more there are); :attr:`problems` lists every one."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems) or (message,)


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


# The validators give friendly messages; the same regular expressions are also published in the
# JSON schema (``pattern``), from which the Kubernetes CRDs are generated.
Label = Annotated[
    str,
    AfterValidator(_label),
    Field(json_schema_extra={"pattern": LABEL.pattern, "maxLength": 63}),
]
Capability = Annotated[
    str,
    AfterValidator(_capability),
    Field(json_schema_extra={"pattern": _CAPABILITY.pattern, "maxLength": 63}),
]
MediaType = Annotated[
    str,
    Field(
        min_length=3,
        max_length=127,
        pattern=r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9*][a-z0-9!#$&^_.+*-]*$",
    ),
]
EnvName = Annotated[
    str, AfterValidator(_env_name), Field(json_schema_extra={"pattern": _ENV_NAME.pattern})
]
_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class ObjectMeta(ResourceModel):
    """``metadata``: the agent's name and namespace (``default`` when omitted)."""

    name: Label = Field(
        description="The resource's name, a DNS-1123 label (an agent's id is namespace/name)."
    )
    namespace: Label = Field(
        default=DEFAULT_NAMESPACE, description="The namespace; default when omitted."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Kubernetes labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Kubernetes annotations.")


# What the control plane sets in the agent's environment; ``spec.env`` entries of these names
# are dropped (they would point the agent at another sidecar, or hand it the wrong token).
CONTROL_PLANE_ENV = frozenset({"MAS_SIDECAR_URL", "MAS_AGENT_ID", TOKEN_ENV, TOKEN_FILE_ENV})


def _object_name(description: str) -> Any:
    """A field holding the name of a Secret or ConfigMap (a DNS-1123 subdomain)."""
    return Field(min_length=1, max_length=253, pattern=_SUBDOMAIN, description=description)


class SecretKeySelector(ResourceModel):
    """One key of a Secret in the agent's namespace (core/v1 ``SecretKeySelector``)."""

    name: str = _object_name("Name of the Secret in the agent's namespace.")
    key: str = Field(min_length=1, max_length=253, description="The key in the Secret.")
    optional: bool = Field(
        default=False, description="Whether the variable may be left unset when it is missing."
    )


class ConfigMapKeySelector(ResourceModel):
    """One key of a ConfigMap in the agent's namespace (core/v1 ``ConfigMapKeySelector``)."""

    name: str = _object_name("Name of the ConfigMap in the agent's namespace.")
    key: str = Field(min_length=1, max_length=253, description="The key in the ConfigMap.")
    optional: bool = Field(
        default=False, description="Whether the variable may be left unset when it is missing."
    )


class ObjectFieldSelector(ResourceModel):
    """A field of the pod (core/v1 ``ObjectFieldSelector``), e.g. ``metadata.name``."""

    field_path: str = Field(min_length=1, description="Path of the field, e.g. metadata.name.")
    api_version: str | None = Field(
        default=None, description="Version of the schema the path is written in (v1)."
    )


class ResourceFieldSelector(ResourceModel):
    """A resource limit or request of the agent container (core/v1 ``ResourceFieldSelector``)."""

    resource: str = Field(min_length=1, description="The resource, e.g. limits.memory.")
    container_name: str | None = Field(
        default=None, description="The container; the agent container when omitted."
    )
    divisor: str | None = Field(default=None, description="Unit of the value, e.g. 1Mi.")


class EnvVarSource(ResourceModel):
    """``valueFrom``: where the variable's value comes from, exactly one source."""

    secret_key_ref: SecretKeySelector | None = Field(
        default=None,
        description="A key of a Secret (never an agent's *-mas-credentials Secret, nor one in "
        "the operator's namespace); only the agent container gets it.",
    )
    config_map_key_ref: ConfigMapKeySelector | None = Field(
        default=None, description="A key of a ConfigMap."
    )
    field_ref: ObjectFieldSelector | None = Field(
        default=None, description="A field of the pod (metadata.name, metadata.namespace, ...)."
    )
    resource_field_ref: ResourceFieldSelector | None = Field(
        default=None, description="A resource limit or request of the agent container."
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        given = [name for name, value in self if value is not None]
        if len(given) != 1:
            raise ValueError(
                "valueFrom takes exactly one of secretKeyRef, configMapKeyRef, fieldRef and "
                f"resourceFieldRef, not {len(given)}"
            )
        return self


class EnvVar(ResourceModel):
    """One ``spec.env`` entry, given to the agent process (never to the sidecar), as Kubernetes'
    core/v1 ``EnvVar``; MAS_SIDECAR_URL, MAS_AGENT_ID, MAS_SIDECAR_TOKEN and
    MAS_SIDECAR_TOKEN_FILE are set by the control plane instead."""

    name: EnvName = Field(
        description="Variable name: letters, digits, '_', '-' and '.', not starting with a digit."
    )
    value: str = Field(default="", description="Variable value; empty when omitted.")
    value_from: EnvVarSource | None = Field(
        default=None,
        description="Where the value comes from instead (a Secret or ConfigMap key, a field of "
        "the pod); not with value.",
    )

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value and self.value_from is not None:
            raise ValueError(f"{self.name}: value and valueFrom exclude each other")
        return self


class NamedRef(ResourceModel):
    """A Secret or ConfigMap ``envFrom`` takes every key of."""

    name: str = _object_name("Its name, in the agent's namespace.")
    optional: bool = Field(
        default=False, description="Whether the container may start when it is missing."
    )


class EnvFromSource(ResourceModel):
    """One ``spec.envFrom`` entry (core/v1 ``EnvFromSource``): every key of a Secret or a
    ConfigMap as a variable of the agent container; ``spec.env`` wins over it."""

    prefix: str = Field(default="", description="Prepended to each key to name its variable.")
    secret_ref: NamedRef | None = Field(
        default=None,
        description="A Secret (never an agent's *-mas-credentials Secret, nor one in the "
        "operator's namespace); only the agent container gets it.",
    )
    config_map_ref: NamedRef | None = Field(default=None, description="A ConfigMap.")

    @model_validator(mode="after")
    def _one_source(self) -> EnvFromSource:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError("envFrom takes exactly one of secretRef and configMapRef")
        return self


class LocalObjectReference(ResourceModel):
    """An object in the agent's namespace, by name (an image pull Secret)."""

    name: str = _object_name("Name of the Secret in the agent's namespace.")


class Delivery(ResourceModel):
    """``spec.delivery``: how the agent's sidecar redelivers and dead-letters messages."""

    max_attempts: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Deliveries of one message before it is dead-lettered.",
    )
    lease_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="Seconds a replica holds a delivered message before it is redelivered.",
    )


class LocalSpec(ResourceModel):
    """``spec.local``: how ``mas up`` runs the agent (the command runs in the manifest's DIR)."""

    command: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1,
        description="The agent's command line for mas up, run from the manifest's folder.",
    )


class HostAlias(ResourceModel):
    """One ``spec.hostAliases`` entry: an ``/etc/hosts`` line in the agent's pod."""

    ip: str = Field(min_length=1, description="IP address of the host entry.")
    hostnames: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Hostnames for the IP address."
    )


class SidecarSpec(ResourceModel):
    """``spec.sidecar``: the policing sidecar container next to the agent."""

    port: int = Field(
        default=8790,
        ge=1024,
        le=65535,
        description="Port of the sidecar's HTTP API on the pod's loopback interface.",
    )
    metrics_port: int = Field(
        default=9090,
        ge=1024,
        le=65535,
        description="Port, on the pod's address, of the sidecar's listener for Prometheus and "
        "the kubelet's probes: /metrics, /healthz and /readyz only, never the message API.",
    )
    image: str | None = Field(
        default=None, description="Sidecar container image; the operator's default when omitted."
    )

    @model_validator(mode="after")
    def _two_ports(self) -> SidecarSpec:
        if self.metrics_port == self.port:
            raise ValueError(f"metricsPort and port must differ (both {self.port})")
        return self


NON_ROOT_ID = 65532  # the uid and gid agent containers run as unless the spec says otherwise
_MAX_ID = 2_147_483_647


class SecurityContext(ResourceModel):
    """``spec.securityContext``: who the agent container runs as, within Kubernetes' *restricted*
    Pod Security Standard.

    Only what cannot loosen that standard can be set: the container never runs as root, never
    gains privileges or capabilities, and keeps the runtime's default seccomp profile whatever
    this says.
    """

    run_as_user: int = Field(
        default=NON_ROOT_ID,
        ge=1,
        le=_MAX_ID,
        description="User id of the agent's processes; never 0 (root).",
    )
    run_as_group: int = Field(
        default=NON_ROOT_ID, ge=0, le=_MAX_ID, description="Primary group id of those processes."
    )
    fs_group: int | None = Field(
        default=None,
        ge=0,
        le=_MAX_ID,
        description="Group that owns the pod's volumes and may write them; none when omitted.",
    )
    read_only_root_filesystem: bool = Field(
        default=True,
        description="Mount the agent container's root filesystem read-only; mount an emptyDir "
        "volume where the agent writes files, or set false.",
    )


class A2ASkill(ResourceModel):
    """One ``spec.a2a.skills`` entry: what the agent card says of one capability."""

    id: Capability = Field(description="The capability this skill describes.")
    name: str | None = Field(
        default=None, max_length=128, description="Display name; the capability when omitted."
    )
    description: str = Field(default="", max_length=2048, description="What the skill does.")
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=32, description="Keywords for the skill."
    )
    examples: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default_factory=list, max_length=32, description="Example requests."
    )
    input_modes: list[MediaType] = Field(
        default_factory=list, description="Media types it accepts; the card's default if empty."
    )
    output_modes: list[MediaType] = Field(
        default_factory=list, description="Media types it answers; the card's default if empty."
    )


class A2AClient(ResourceModel):
    """One ``spec.a2a.clients`` entry: an external A2A client allowed to call the agent.

    It calls as the principal ``external/<name>``, which GatewayPolicy rules can name, with
    the bearer API key kept in a Secret (``mas up``: its secrets file or environment).
    """

    name: Label = Field(description="The client's name: it calls as external/<name>.")
    secret_key_ref: SecretKeySelector = Field(
        description="The Secret key holding the client's API key (at least 16 characters)."
    )


class A2ASpec(ResourceModel):
    """``spec.a2a``: the agent's A2A agent card, and whether A2A clients may call it."""

    description: str = Field(default="", max_length=2048, description="The card's description.")
    version: str = Field(
        default=DEFAULT_VERSION, min_length=1, max_length=64, description="The agent's version."
    )
    skills: list[A2ASkill] = Field(
        default_factory=list,
        description="Descriptions of capabilities (each must be one of spec.capabilities).",
    )
    default_input_modes: list[MediaType] = Field(
        default_factory=lambda: list(DEFAULT_MODES),
        description="Media types the agent accepts.",
    )
    default_output_modes: list[MediaType] = Field(
        default_factory=lambda: list(DEFAULT_MODES),
        description="Media types the agent answers with.",
    )
    expose: bool = Field(
        default=False,
        description="Serve the A2A JSON-RPC binding on port for the clients below.",
    )
    port: int = Field(
        default=8791, ge=1024, le=65535, description="Port of the A2A listener (on the pod IP)."
    )
    clients: list[A2AClient] = Field(
        default_factory=list, max_length=256, description="External clients that may call."
    )

    @model_validator(mode="after")
    def _unique_clients(self) -> A2ASpec:
        names = [client.name for client in self.clients]
        if len(set(names)) != len(names):
            raise ValueError("client names must be unique")
        return self


class AgentSpec(ResourceModel):
    """``spec``: what the agent can do and how it runs.

    The pod-template fields (``serviceAccountName`` to ``securityContext``), ``envFrom``,
    ``sidecar`` and ``deletionPolicy`` are used by the Kubernetes operator; local mode ignores
    them (and reads ``env``'s references itself: :mod:`mas_cli.local.secrets`).
    """

    capabilities: list[Capability] = Field(
        default_factory=list,
        description="Capability names published in discovery; policy rules can target them.",
    )
    roles: list[Label] = Field(
        default_factory=list,
        description="Roles carried in the agent's identity token; policy rules match senders "
        "by them.",
    )
    replicas: int = Field(
        default=1,
        ge=0,
        description="Number of replicas sharing the agent's inbox; 0 stops them while messages "
        "wait (Kubernetes only: mas up runs 1 to 20). The Agent's scale subresource sets it.",
    )
    image: str | None = Field(
        default=None, description="Agent container image (Kubernetes only; ignored locally)."
    )
    command: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="Entrypoint of the agent container (Kubernetes only); default: the image's.",
    )
    args: list[str] = Field(
        default_factory=list,
        description="Arguments of the agent container (Kubernetes only); default: the image's.",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description="Environment variables given to the agent process, values or references "
        "(mas up reads a secretKeyRef from its secrets file or environment).",
    )
    env_from: list[EnvFromSource] = Field(
        default_factory=list,
        description="Secrets and ConfigMaps whose every key becomes a variable of the agent "
        "container (Kubernetes only).",
    )
    delivery: Delivery = Field(
        default_factory=Delivery,
        description="How the sidecar redelivers and dead-letters messages.",
    )
    local: LocalSpec | None = Field(
        default=None, description="How mas up runs the agent locally (ignored by the operator)."
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=_SUBDOMAIN,
        description="Service account of the agent's pods; the namespace's default when omitted.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the agent's pods must be scheduled on."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Kubernetes tolerations of the agent's pods (core/v1 Toleration objects).",
    )
    resources: dict[str, Any] = Field(
        default_factory=dict,
        description="Compute resources of the agent container (core/v1 ResourceRequirements).",
    )
    volumes: list[dict[str, Any]] = Field(
        default_factory=list, description="Extra pod volumes (core/v1 Volume objects)."
    )
    volume_mounts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Mounts of those volumes in the agent container (core/v1 VolumeMount).",
    )
    host_network: bool = Field(
        default=False, description="Run the agent's pods in the node's network namespace."
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        description="Secrets holding the registry credentials to pull the images with.",
    )
    affinity: dict[str, Any] = Field(
        default_factory=dict,
        description="Scheduling affinity of the agent's pods (core/v1 Affinity).",
    )
    topology_spread_constraints: list[dict[str, Any]] = Field(
        default_factory=list,
        description="How the agent's pods spread across zones or nodes (core/v1 "
        "TopologySpreadConstraint objects).",
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations of the agent's pods; none under mas.dev/ or that loosens "
        "AppArmor or seccomp.",
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of the agent's pods besides the operator's (which they cannot "
        "replace).",
    )
    priority_class_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=_SUBDOMAIN,
        description="PriorityClass of the agent's pods; none of the system- classes.",
    )
    host_aliases: list[HostAlias] = Field(
        default_factory=list, description="Extra /etc/hosts entries of the agent's pods."
    )
    security_context: SecurityContext = Field(
        default_factory=SecurityContext,
        description="Who the agent container runs as (restricted Pod Security Standard).",
    )
    sidecar: SidecarSpec = Field(
        default_factory=SidecarSpec, description="Settings of the policing sidecar container."
    )
    deletion_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description="Retain keeps the agent's streams and state in Redis when the Agent is "
        "deleted; Delete removes them.",
    )
    a2a: A2ASpec | None = Field(
        default=None,
        alias="a2a",
        description="The A2A agent card and inbound A2A calls (see docs/a2a.md).",
    )

    @model_validator(mode="after")
    def _skills_are_capabilities(self) -> AgentSpec:
        if self.a2a is not None:
            unknown = sorted({s.id for s in self.a2a.skills} - set(self.capabilities))
            if unknown:
                raise ValueError(f"a2a.skills name capabilities the agent lacks: {unknown}")
            if self.a2a.expose and self.a2a.port in (self.sidecar.port, self.sidecar.metrics_port):
                raise ValueError("a2a.port must differ from sidecar.port and sidecar.metricsPort")
        return self


class AgentManifest(ResourceModel):
    """One ``Agent`` document."""

    api_version: Literal["mas.dev/v1alpha1"] = Field(
        description="The API version: mas.dev/v1alpha1."
    )
    kind: Literal["Agent"] = Field(description="The kind: Agent.")
    metadata: ObjectMeta = Field(description="The agent's name and namespace.")
    spec: AgentSpec = Field(
        default_factory=AgentSpec, description="What the agent can do and how it runs."
    )

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
    return _parse(AgentManifest, document, source)


def _parse(model: type[ModelT], document: Any, source: str) -> ModelT:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise ManifestError(_describe(exc, source), _problems(exc, source)) from None


def _problem(error: ErrorDetails, source: str) -> str:
    message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
    message = message.removeprefix("Value error, ")
    return f"{source}: {_field_path(error['loc'])}: {message}"


def _describe(exc: ValidationError, source: str) -> str:
    more = exc.error_count() - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return _problem(exc.errors()[0], source) + suffix


def _problems(exc: ValidationError, source: str) -> list[str]:
    return [_problem(error, source) for error in exc.errors()]


class GatewayPolicyManifest(ResourceModel):
    """One ``GatewayPolicy`` document."""

    api_version: Literal["mas.dev/v1alpha1"] = Field(
        description="The API version: mas.dev/v1alpha1."
    )
    kind: Literal["GatewayPolicy"] = Field(description="The kind: GatewayPolicy.")
    metadata: ObjectMeta = Field(description="The policy's name and namespace.")
    spec: GatewayPolicySpec = Field(
        default_factory=GatewayPolicySpec,
        description="Which senders the policy applies to and what it enforces on them.",
    )


def parse_policy(document: Any, source: str) -> GatewayPolicyManifest:
    """Validate one parsed YAML document as a ``GatewayPolicy``."""
    return _parse(GatewayPolicyManifest, document, source)


class ExternalCredentials(ResourceModel):
    """``spec.credentials``: the bearer token the senders' sidecars present to the remote."""

    secret_key_ref: SecretKeySelector = Field(
        description="The Secret key holding the token (mas up: its secrets file)."
    )


class ExternalAgentSpec(ResourceModel):
    """``spec``: where an A2A agent outside mas answers, and what it can do."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2048)] = Field(
        description="The remote agent's A2A JSON-RPC endpoint (its card's interface URL)."
    )
    card_url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2048)] | None = Field(
        default=None, description="Where the remote agent serves its agent card."
    )
    capabilities: list[Capability] = Field(
        default_factory=list, max_length=64, description="Capabilities it has in discovery."
    )
    description: str = Field(default="", max_length=2048, description="What the agent does.")
    credentials: ExternalCredentials | None = Field(
        default=None, description="The bearer token for the remote agent; none when it is open."
    )


class ExternalAgentManifest(ResourceModel):
    """One ``ExternalAgent`` document: an A2A agent outside mas that mas agents may call."""

    api_version: Literal["mas.dev/v1alpha1"] = Field(
        description="The API version: mas.dev/v1alpha1."
    )
    kind: Literal["ExternalAgent"] = Field(description="The kind: ExternalAgent.")
    metadata: ObjectMeta = Field(description="The external agent's name and namespace.")
    spec: ExternalAgentSpec = Field(description="Where the remote agent answers.")

    @property
    def agent_id(self) -> str:
        """The full ``namespace/name`` id senders address it by."""
        return f"{self.metadata.namespace}/{self.metadata.name}"


def parse_external_agent(document: Any, source: str) -> ExternalAgentManifest:
    """Validate one parsed YAML document as an ``ExternalAgent``."""
    return _parse(ExternalAgentManifest, document, source)
