"""The ``Agent``, ``GatewayPolicy`` and ``ExternalAgent`` CustomResourceDefinitions, generated
from the models.

The pydantic models in :mod:`mas_core.manifests` and :mod:`mas_core.policy` validate these resources
in local mode and in the operator; this module turns their JSON schema into the *structural*
OpenAPI v3 schema Kubernetes wants (``apiextensions.k8s.io/v1``, no CEL, so Kubernetes 1.20 and
later): every ``$ref`` inlined, ``title`` dropped, ``X | None`` as ``nullable``, maps as
``additionalProperties``, free-form objects as ``x-kubernetes-preserve-unknown-fields``, and
JSON Schema 2020-12's numeric ``exclusiveMinimum`` as OpenAPI's ``minimum`` plus boolean. A
construct it cannot translate is an error, never silently dropped. The ``status`` models, which
the operator writes, are defined here.

``python -m mas_operator.crds`` writes ``crds/agent.yaml``, ``crds/gatewaypolicy.yaml`` and
``crds/externalagent.yaml``;
with ``--check`` it exits 1 when they differ from what the models generate. Everything else is
pure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from mas_core.manifests import (
    AGENT_KIND,
    EXTERNAL_AGENT_KIND,
    GROUP,
    POLICY_KIND,
    VERSION,
    AgentManifest,
    ExternalAgentManifest,
    GatewayPolicyManifest,
)
from mas_core.schema import ResourceModel

Schema = dict[str, Any]

AGENT_PLURAL = "agents"
POLICY_PLURAL = "gatewaypolicies"
EXTERNAL_AGENT_PLURAL = "externalagents"
CATEGORIES = ["mas"]
HEADER = (
    "# Generated from the mas models by `python -m mas_operator.crds`; do not edit.\n"
    "# Kubernetes 1.20 or later.\n"
)

# Keys copied unchanged from the JSON schema, in the order they are written.
_SCALAR_KEYS = (
    "enum",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
)
# Keys the conversion understands; anything else in the JSON schema is an error.
_KNOWN_KEYS = frozenset(
    {
        *_SCALAR_KEYS,
        "$ref",
        "$defs",
        "title",
        "description",
        "type",
        "const",
        "anyOf",
        "default",
        "items",
        "properties",
        "required",
        "additionalProperties",
    }
)


class CrdSchemaError(ValueError):
    """A model's JSON schema uses something a structural CRD schema cannot express."""


class Condition(ResourceModel):
    """One status condition, like Kubernetes' own ``metav1.Condition``."""

    type: str = Field(
        min_length=1,
        max_length=316,
        description="The condition's type, e.g. Ready (Agent) or Valid (GatewayPolicy).",
    )
    status: Literal["True", "False", "Unknown"] = Field(
        description="Whether the condition holds: True, False or Unknown."
    )
    reason: str | None = Field(
        default=None,
        max_length=1024,
        description="Why the condition last changed, one CamelCase word.",
    )
    message: str | None = Field(
        default=None, max_length=32768, description="Human-readable details of the change."
    )
    last_transition_time: datetime | None = Field(
        default=None, description="When the status of the condition last changed."
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation the condition was computed from.",
    )


class AuditStatus(ResourceModel):
    """How the operator finds the agent's audit trail at its last checkpoint (every field
    but ``intact`` absent before the first)."""

    intact: bool = Field(description="Whether the trail continues the last good checkpoint.")
    message: str | None = Field(
        default=None, max_length=32768, description="What the operator found, or why not."
    )
    checkpoint: int | None = Field(None, ge=1, description="Number of that signed checkpoint.")
    checkpointed_at: datetime | None = Field(None, description="When it was taken.")
    entries: int | None = Field(None, ge=0, description="Entries it covers since the trail began.")
    archived_entries: int | None = Field(
        None, ge=0, description="Of those, entries archived and trimmed from Redis."
    )


class InboxStatus(ResourceModel):
    """The agent's inbox as the operator last measured it (its Prometheus gauges say the
    same)."""

    messages: int = Field(
        ge=0, description="Messages to the agent not yet acked: waiting, or leased to a replica."
    )
    pending: int = Field(ge=0, description="Of those, messages leased to a replica.")
    oldest_age_seconds: int = Field(
        ge=0, description="Age of the oldest of those messages, in seconds; 0 when none."
    )


class AgentStatus(ResourceModel):
    """``status`` of an ``Agent``, written by the operator."""

    conditions: list[Condition] = Field(
        default_factory=list, description="Observed conditions; Ready says the agent is serving."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the operator last reconciled."
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        description="Pods of the agent's Deployment, ready or not (the scale subresource's "
        "status.replicas).",
    )
    ready_replicas: int | None = Field(
        default=None, ge=0, description="Replicas whose agent and sidecar are ready."
    )
    readiness: str | None = Field(
        default=None,
        description="Ready replicas of the desired ones, e.g. 2/3 (the Ready column).",
    )
    selector: str | None = Field(
        default=None,
        description="Label selector of the agent's pods, for the scale subresource (a "
        "HorizontalPodAutoscaler finds the pods by it).",
    )
    inbox: InboxStatus | None = Field(
        default=None, description="The agent's inbox backlog at the operator's last look."
    )
    policy_revision: str | None = Field(
        default=None, description="Revision of the compiled gateway policy the sidecars enforce."
    )
    token_expires_at: datetime | None = Field(
        default=None, description="When the agent's identity token expires (renewed before)."
    )
    audit: AuditStatus | None = Field(
        default=None, description="The audit trail at the operator's last checkpoint of it."
    )


class GatewayPolicyStatus(ResourceModel):
    """``status`` of a ``GatewayPolicy``, written by the operator."""

    conditions: list[Condition] = Field(
        default_factory=list, description="Observed conditions; Valid says the policy compiled."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the operator last reconciled."
    )
    revision: str | None = Field(
        default=None, description="Revision of the compiled policy document that includes it."
    )
    enforced_by: int | None = Field(
        default=None, ge=0, description="Sidecar replicas enforcing that revision."
    )
    selected_agents: int | None = Field(
        default=None, ge=0, description="Agents whose replicas the policy's agents select."
    )
    error: str | None = Field(
        default=None, description="Why the policy is invalid; empty while it is valid."
    )


def _text(description: str) -> str:
    """One line of plain text from a docstring or field description."""
    return " ".join(description.replace("``", "`").split())


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    """``node`` with a ``$ref`` replaced by its definition; the node's own keys win."""
    ref = node.get("$ref")
    if ref is None:
        return node
    prefix = "#/$defs/"
    if not isinstance(ref, str) or not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise CrdSchemaError(f"cannot resolve $ref {ref!r}")
    target = _resolve(defs[ref[len(prefix) :]], defs)
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _nullable(node: Mapping[str, Any], defs: Mapping[str, Any], where: str) -> Schema:
    """``anyOf: [X, {type: null}]`` as X with ``nullable: true`` (and no null default)."""
    options = node["anyOf"]
    others = [o for o in options if o != {"type": "null"}]
    if len(options) != 2 or len(others) != 1:
        raise CrdSchemaError(f"{where}: only 'X or null' unions are supported, not {options}")
    merged = {**_resolve(others[0], defs), **{k: v for k, v in node.items() if k != "anyOf"}}
    if merged.get("default", 0) is None:
        del merged["default"]
    schema = convert(merged, defs, where)
    schema["nullable"] = True
    return _ordered(schema)


def _ordered(schema: Schema) -> Schema:
    """The keys in a fixed, readable order."""
    first = ("description", "type", *_SCALAR_KEYS, "nullable", "default")
    last = ("required", "properties", "items", "additionalProperties")
    keys = [k for k in first if k in schema]
    keys += sorted(k for k in schema if k not in first and k not in last)
    keys += [k for k in last if k in schema]
    return {k: schema[k] for k in keys}


def convert(node: Mapping[str, Any], defs: Mapping[str, Any], where: str = "") -> Schema:
    """One JSON schema node (and everything under it) as a structural OpenAPI v3 schema.

    ``defs`` holds the ``$defs`` that ``$ref`` points into; ``where`` names the node in errors.
    """
    node = _resolve(node, defs)
    unknown = sorted(set(node) - _KNOWN_KEYS)
    if unknown:
        raise CrdSchemaError(f"{where or '(root)'}: unsupported JSON schema keys {unknown}")
    if "anyOf" in node:
        return _nullable(node, defs, where)
    schema: Schema = {}
    if "description" in node:
        schema["description"] = _text(node["description"])
    if "const" in node:
        schema["enum"] = [node["const"]]
    kind = node.get("type")
    if kind is None and "const" in node:
        kind = {str: "string", bool: "boolean", int: "integer"}.get(type(node["const"]))
    if kind is None and "enum" in node:
        kinds = {type(v) for v in node["enum"]}
        kind = "string" if kinds == {str} else None
    if not isinstance(kind, str) or kind == "null":
        raise CrdSchemaError(f"{where or '(root)'}: no single type in {dict(node)}")
    schema["type"] = kind
    for key in _SCALAR_KEYS:
        if key in node and not (key == "enum" and "enum" in schema):
            schema[key] = node[key]
    for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if key in schema and not isinstance(schema[key], bool):
            if bound in schema:
                raise CrdSchemaError(f"{where}: both {bound} and {key}")
            schema[bound] = schema.pop(key)
            schema[key] = True
    # Kubernetes 1.20 turns an empty-string default into null and then rejects the CRD ("in
    # body must be of type string"); the models apply such defaults anyway.
    if "default" in node and node["default"] is not None and node["default"] != "":
        schema["default"] = node["default"]
    if kind == "array":
        if "items" not in node:
            raise CrdSchemaError(f"{where}: an array needs items")
        schema["items"] = convert(node["items"], defs, f"{where}[]")
    if kind == "object":
        _object(node, defs, where, schema)
    return _ordered(schema)


def _object(node: Mapping[str, Any], defs: Mapping[str, Any], where: str, schema: Schema) -> None:
    """The properties, map values or free-form content of an object schema."""
    properties = node.get("properties")
    extra = node.get("additionalProperties")
    if properties:
        schema["properties"] = {
            name: convert(sub, defs, f"{where}.{name}" if where else name)
            for name, sub in properties.items()
        }
        if node.get("required"):
            schema["required"] = list(node["required"])
        # ``additionalProperties: false`` (extra="forbid") cannot be expressed: the API server
        # prunes unknown fields instead, and the models reject them.
        if extra not in (None, False):
            raise CrdSchemaError(f"{where}: both properties and additionalProperties")
    elif isinstance(extra, Mapping) and extra:
        schema["additionalProperties"] = convert(extra, defs, f"{where}.*")
    elif extra is True or extra == {} or extra is None:
        schema["x-kubernetes-preserve-unknown-fields"] = True
    else:
        raise CrdSchemaError(f"{where}: an object with no properties and no values")


def model_schema(model: type[BaseModel]) -> Schema:
    """The structural schema of a model, its field names as the camelCase aliases of YAML."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return convert(raw, raw.get("$defs", {}))


def _property_description(model: type[BaseModel], alias: str) -> str:
    for field in model.model_fields.values():
        if field.alias == alias and field.description:
            return _text(field.description)
    raise CrdSchemaError(f"{model.__name__} has no described field {alias!r}")


def resource_schema(
    manifest: type[BaseModel], status: type[BaseModel], description: str, status_text: str
) -> Schema:
    """The ``openAPIV3Schema`` of a custom resource: the manifest model plus its status.

    ``apiVersion`` and ``kind`` are plain strings (the API server sets and checks them);
    ``metadata`` may only constrain ``name`` and carries no description (Kubernetes forbids it).
    """
    root = model_schema(manifest)
    properties = root["properties"]
    name = dict(properties["metadata"]["properties"]["name"])
    name.pop("default", None)
    return {
        "description": _text(description),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": _property_description(manifest, "apiVersion"),
                "type": "string",
            },
            "kind": {"description": _property_description(manifest, "kind"), "type": "string"},
            "metadata": {"type": "object", "properties": {"name": name}},
            "spec": properties["spec"],
            "status": {**model_schema(status), "description": _text(status_text)},
        },
    }


def _column(name: str, kind: str, path: str, description: str, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {
        "name": name,
        "type": kind,
        "jsonPath": path,
        "description": description,
    }
    if priority:
        column["priority"] = priority
    return column


_AGE = _column("Age", "date", ".metadata.creationTimestamp", "Time since the resource was made.")


def _crd(
    kind: str,
    plural: str,
    short_names: Sequence[str],
    schema: Schema,
    columns: Sequence[Mapping[str, Any]],
    *,
    subresources: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "mas"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": list(short_names),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": dict(subresources),
                    "additionalPrinterColumns": [dict(c) for c in columns],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def agent_crd() -> dict[str, Any]:
    """The ``agents.mas.dev`` CustomResourceDefinition."""
    schema = resource_schema(
        AgentManifest,
        AgentStatus,
        "An agent of the mas messaging system: its pods run the agent's container next to a "
        "policing sidecar that delivers its messages over Redis Streams and enforces the "
        "GatewayPolicies that select it.",
        "The observed state of the agent, written by the operator.",
    )
    columns = [
        _column("Ready", "string", ".status.readiness", "Ready replicas of the desired ones."),
        _column(
            "Status",
            "string",
            '.status.conditions[?(@.type=="Ready")].reason',
            "Why the agent is serving or not (Available, RollingOut, Forbidden, ...).",
        ),
        _column(
            "Backlog",
            "integer",
            ".status.inbox.messages",
            "Messages to the agent not yet acked.",
        ),
        _column("Capabilities", "string", ".spec.capabilities", "Capabilities in discovery."),
        _column(
            "Policy",
            "string",
            ".status.policyRevision",
            "Revision of the gateway policy its sidecars enforce.",
        ),
        _AGE,
    ]
    # kubectl scale and HorizontalPodAutoscalers (KEDA too) set spec.replicas through it.
    scale = {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    return _crd(
        AGENT_KIND,
        AGENT_PLURAL,
        ["masagent"],
        schema,
        columns,
        subresources={"status": {}, "scale": scale},
    )


def gateway_policy_crd() -> dict[str, Any]:
    """The ``gatewaypolicies.mas.dev`` CustomResourceDefinition."""
    schema = resource_schema(
        GatewayPolicyManifest,
        GatewayPolicyStatus,
        "What the selected agents' sidecars enforce on the messages they send: allow and deny "
        "rules, rate limits, data-loss prevention, circuit breaking, signing, audit and "
        "discovery settings. All policies are compiled into one document with a revision.",
        "The observed state of the policy, written by the operator.",
    )
    columns = [
        _column(
            "Revision", "string", ".status.revision", "Revision of the compiled policy document."
        ),
        _column("Enforced", "integer", ".status.enforcedBy", "Sidecars enforcing that revision."),
        _column(
            "Valid",
            "string",
            '.status.conditions[?(@.type=="Valid")].status',
            "Whether the policy is valid.",
        ),
        _AGE,
    ]
    return _crd(POLICY_KIND, POLICY_PLURAL, ["gwp"], schema, columns, subresources={"status": {}})


class ExternalAgentStatus(ResourceModel):
    """``status`` of an ``ExternalAgent``, written by the operator."""

    conditions: list[Condition] = Field(
        default_factory=list, description="Observed conditions; Registered says it is in discovery."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the operator last reconciled."
    )


def external_agent_crd() -> dict[str, Any]:
    """The ``externalagents.mas.dev`` CustomResourceDefinition."""
    schema = resource_schema(
        ExternalAgentManifest,
        ExternalAgentStatus,
        "An A2A agent outside mas that mas agents may call: it appears in discovery like any "
        "agent, and the sending sidecar applies every gateway check before it calls the remote "
        "agent over A2A.",
        "The observed state of the external agent, written by the operator.",
    )
    columns = [
        _column("URL", "string", ".spec.url", "The remote agent's A2A endpoint."),
        _column("Capabilities", "string", ".spec.capabilities", "Capabilities in discovery."),
        _AGE,
    ]
    return _crd(
        EXTERNAL_AGENT_KIND, EXTERNAL_AGENT_PLURAL, ["masext"], schema, columns,
        subresources={"status": {}},
    )  # fmt: skip


class _Dumper(yaml.SafeDumper):
    """Writes shared values in full rather than as YAML anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(crd: Mapping[str, Any]) -> str:
    """A CRD as the YAML text committed in ``crds/``."""
    body = yaml.dump(dict(crd), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


def generated_files() -> dict[str, str]:
    """File name in ``crds/`` -> its generated text."""
    return {
        "agent.yaml": render(agent_crd()),
        "gatewaypolicy.yaml": render(gateway_policy_crd()),
        "externalagent.yaml": render(external_agent_crd()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Write the CRDs, or with ``--check`` report (exit status 1) those that are out of date."""
    parser = argparse.ArgumentParser(
        prog="python -m mas_operator.crds", description="Generate the mas CRDs from the models."
    )
    parser.add_argument("--dir", type=Path, default=Path("crds"), help="default: ./crds")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the files differ from the models"
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir
    stale: list[str] = []
    for name, text in generated_files().items():
        path = directory / name
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python -m mas_operator.crds", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
