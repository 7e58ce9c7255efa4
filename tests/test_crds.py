"""The CRDs in ``crds/``: generated from the models, structural, and as strict as the models.

The committed files must equal what ``python -m mas_operator.crds`` generates; their schemas
must be structural (what ``apiextensions.k8s.io/v1`` demands), every property documented, the
examples valid, and bad resources rejected with a clear message (checked with ``jsonschema``'s
draft-4 validator, the closest to Kubernetes' OpenAPI v3 dialect, which ignores ``nullable`` and
``x-kubernetes-*``); ``kubernetes-validate`` checks each CRD as a ``CustomResourceDefinition``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from kubernetes_validate.utils import all_versions
from pydantic import BaseModel, ValidationError

from mas_core.manifests import AgentManifest, GatewayPolicyManifest
from mas_operator.crds import (
    CrdSchemaError,
    agent_crd,
    gateway_policy_crd,
    generated_files,
    main,
    model_schema,
)

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "crds"
EXAMPLES = sorted((ROOT / "examples" / "quickstart").glob("*.yaml"))
CRD_BY_KIND = {"Agent": agent_crd(), "GatewayPolicy": gateway_policy_crd()}
MODEL_BY_KIND: dict[str, type[BaseModel]] = {
    "Agent": AgentManifest,
    "GatewayPolicy": GatewayPolicyManifest,
}

AGENT: dict[str, Any] = {
    "apiVersion": "mas.dev/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "worker"},
    "spec": {
        "capabilities": ["work", "summarize.v2"],
        "roles": ["reader"],
        "replicas": 3,
        "image": "example/worker:1",
        "env": [
            {"name": "GREETING", "value": "hello"},
            {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm", "key": "api-key"}}},
            {
                "name": "MODEL",
                "valueFrom": {"configMapKeyRef": {"name": "llm", "key": "model", "optional": True}},
            },
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "MEMORY",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
        ],
        "envFrom": [
            {"secretRef": {"name": "llm"}, "prefix": "LLM_"},
            {"configMapRef": {"name": "x"}},
        ],
        "imagePullSecrets": [{"name": "registry"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
            }
        ],
        "podAnnotations": {"example.com/team": "blue"},
        "podLabels": {"team": "blue"},
        "priorityClassName": "agents",
        "delivery": {"maxAttempts": 7, "leaseSeconds": 12},
        "serviceAccountName": "worker-sa",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
        "volumes": [{"name": "data", "emptyDir": {}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "hostNetwork": False,
        "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db.local"]}],
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 2000,
            "readOnlyRootFilesystem": False,
        },
        "sidecar": {"port": 8790, "image": "example/sidecar:1"},
        "deletionPolicy": "Delete",
    },
}
POLICY: dict[str, Any] = {
    "apiVersion": "mas.dev/v1alpha1",
    "kind": "GatewayPolicy",
    "metadata": {"name": "quickstart"},
    "spec": {
        "agents": ["*", "team/*"],
        "rules": [
            {
                "name": "ping-pong",
                "action": "allow",
                "from": {"agents": ["pinger"], "roles": ["caller"]},
                "to": {"capabilities": ["pong"]},
                "types": ["ping", "note.*"],
            }
        ],
        "rateLimits": [{"name": "per-replica", "rate": 0.5, "burst": 40, "scope": "agent"}],
        "dlp": {
            "detectors": {"email": "redact", "us_ssn": "block"},
            "custom": [{"name": "ticket", "pattern": "TCK-[0-9]{6}", "action": "block"}],
        },
        "circuitBreaker": {"backlogThreshold": 1000, "openSeconds": 5},
        "signing": {"required": True},
        "audit": {"payloads": "redacted"},
        "discovery": {"restricted": True},
    },
}


def schema_of(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = CRD_BY_KIND[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def crd_errors(document: dict[str, Any]) -> list[jsonschema.ValidationError]:
    """What the CRD schema says about ``document``, best match first."""
    validator = jsonschema.Draft4Validator(schema_of(document["kind"]))
    errors = list(validator.iter_errors(document))
    best = jsonschema.exceptions.best_match(errors)
    return [best, *[e for e in errors if e is not best]] if best is not None else []


def model_accepts(document: dict[str, Any]) -> bool:
    try:
        MODEL_BY_KIND[document["kind"]].model_validate(document)
    except ValidationError:
        return False
    return True


def with_value(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with ``value`` at the dotted ``path`` (digits index lists)."""
    changed = copy.deepcopy(document)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = changed
    for part in parents:
        node = node[part]
    node[last] = value
    return changed


def without(document: dict[str, Any], path: str) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = changed
    for part in parents:
        node = node[part]
    del node[last]
    return changed


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path; properties as ``.name``, items ``[]``, map values ``*``."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")


# -- generated and committed ----------------------------------------------------------------


def test_committed_crds_are_the_generated_ones() -> None:
    for name, text in generated_files().items():
        committed = (CRDS / name).read_text(encoding="utf-8")
        assert committed == text, f"crds/{name} is stale: run python -m mas_operator.crds"


def test_check_mode_and_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", "--dir", str(CRDS)]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["--dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "agent.yaml",
        "externalagent.yaml",
        "gatewaypolicy.yaml",
    ]
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "agent.yaml").write_text("# edited by hand\n", encoding="utf-8")
    assert main(["--check", "--dir", str(tmp_path)]) == 1


def test_committed_files_are_single_crd_documents() -> None:
    for name in generated_files():
        documents = list(yaml.safe_load_all((CRDS / name).read_text(encoding="utf-8")))
        assert len(documents) == 1
        assert documents[0]["kind"] == "CustomResourceDefinition"


# -- shape of the CRDs ------------------------------------------------------------------------


def test_names_versions_subresources() -> None:
    agent, policy = agent_crd(), gateway_policy_crd()
    assert agent["metadata"]["name"] == "agents.mas.dev"
    assert policy["metadata"]["name"] == "gatewaypolicies.mas.dev"
    for crd, plural, kind in (
        (agent, "agents", "Agent"),
        (policy, "gatewaypolicies", "GatewayPolicy"),
    ):
        spec = crd["spec"]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert spec["group"] == "mas.dev" and spec["scope"] == "Namespaced"
        assert spec["names"]["plural"] == plural and spec["names"]["kind"] == kind
        assert spec["names"]["shortNames"] and spec["names"]["categories"] == ["mas"]
        (version,) = spec["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        scale = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
        expected = {"status": {}, "scale": scale} if kind == "Agent" else {"status": {}}
        assert version["subresources"] == expected
        assert "x-kubernetes-validations" not in str(version)  # no CEL: Kubernetes 1.20+


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("Agent", ["Ready", "Status", "Backlog", "Capabilities", "Policy", "Age"]),
        ("GatewayPolicy", ["Revision", "Enforced", "Valid", "Age"]),
    ],
)
def test_printer_columns_point_at_schema_fields(kind: str, columns: list[str]) -> None:
    version = CRD_BY_KIND[kind]["spec"]["versions"][0]
    printed = version["additionalPrinterColumns"]
    assert [c["name"] for c in printed] == columns
    schema = schema_of(kind)
    for column in printed:
        path = column["jsonPath"]
        if path == ".metadata.creationTimestamp":
            continue
        node = schema
        for part in re.sub(r"\[[^\]]*\]", "[]", path).lstrip(".").split("."):
            node = node["properties"][part.removesuffix("[]")]
            if part.endswith("[]"):
                node = node["items"]
        if "[" not in path:
            expected = {"string": {"string", "array"}, "integer": {"integer"}}[column["type"]]
            assert node["type"] in expected, path


def test_schemas_are_structural() -> None:
    forbidden = {"$ref", "$defs", "title", "anyOf", "oneOf", "allOf", "not", "const"}
    for kind in CRD_BY_KIND:
        root = schema_of(kind)
        assert set(root["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
        # Kubernetes allows only constraints on metadata.name (and generateName) there.
        assert root["properties"]["metadata"] == {
            "type": "object",
            "properties": {"name": root["properties"]["metadata"]["properties"]["name"]},
        }
        for path, node in walk(root):
            assert not forbidden & set(node), f"{kind}{path}: {forbidden & set(node)}"
            preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}
            if node["type"] == "object":
                assert "properties" in node or "additionalProperties" in node or preserve, path
                assert not ("properties" in node and "additionalProperties" in node), path
            if node["type"] == "array":
                assert isinstance(node.get("items"), dict), path
            assert node.get("additionalProperties") is not False, path
            for key in ("exclusiveMinimum", "exclusiveMaximum"):
                if key in node:
                    assert node[key] is True and key.replace("exclusiveM", "m") in node, path
            if "default" in node:
                assert node["default"] is not None, path
                assert jsonschema.Draft4Validator(node).is_valid(node["default"]), path


def test_every_property_is_described() -> None:
    for kind in CRD_BY_KIND:
        root = schema_of(kind)
        assert root["description"].strip()
        for path, node in walk(root):
            if path in ("", ".metadata") or path.endswith("[]") or path.endswith(".*"):
                continue  # the root is checked above; Kubernetes forbids metadata's
            description = node.get("description", "")
            assert description.strip(), f"{kind}{path} has no description"
            assert "``" not in description and "\n" not in description, path


def test_only_free_form_fields_preserve_unknown_fields() -> None:
    preserved = {
        path
        for kind in CRD_BY_KIND
        for path, node in walk(schema_of(kind))
        if node.get("x-kubernetes-preserve-unknown-fields")
    }
    assert preserved == {
        ".spec.affinity",
        ".spec.topologySpreadConstraints[]",
        ".spec.tolerations[]",
        ".spec.resources",
        ".spec.volumes[]",
        ".spec.volumeMounts[]",
    }


def test_optional_objects_are_nullable_and_keep_defaults() -> None:
    spec = schema_of("GatewayPolicy")["properties"]["spec"]
    assert spec["properties"]["dlp"]["nullable"] is True
    # default_factory values (agents: ["*"]) stay the model's: the JSON schema does not carry them.
    assert "default" not in spec["properties"]["agents"]
    assert spec["properties"]["circuitBreaker"]["properties"]["openSeconds"]["default"] == 10.0
    rate = spec["properties"]["rateLimits"]["items"]["properties"]["rate"]
    assert (rate["minimum"], rate["exclusiveMinimum"], rate["maximum"]) == (0, True, 1_000_000)
    detectors = spec["properties"]["dlp"]["properties"]["detectors"]
    assert detectors["additionalProperties"]["enum"] == ["block", "redact", "log"]
    agent_spec = schema_of("Agent")["properties"]["spec"]["properties"]
    assert agent_spec["image"]["nullable"] is True
    assert agent_spec["deletionPolicy"] == {
        "description": agent_spec["deletionPolicy"]["description"],
        "type": "string",
        "enum": ["Retain", "Delete"],
        "default": "Retain",
    }
    assert agent_spec["sidecar"]["properties"]["port"]["minimum"] == 1024


# -- Kubernetes' own CustomResourceDefinition schema ------------------------------------------


@pytest.mark.parametrize("version", sorted({all_versions()[0], all_versions()[-1]}))
@pytest.mark.parametrize("kind", ["Agent", "GatewayPolicy"])
def test_kubernetes_validate_accepts_the_crd(kind: str, version: str) -> None:
    document = yaml.safe_load(generated_files()[f"{kind.lower()}.yaml"])
    kubernetes_validate.validate(document, version, strict=True)


def test_kubernetes_validate_rejects_a_broken_crd() -> None:
    broken = copy.deepcopy(agent_crd())
    broken["spec"]["versions"][0]["served"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, all_versions()[0], strict=True)


# -- resources against the CRD schemas and the models -----------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if document and document.get("apiVersion") == "mas.dev/v1alpha1":
            assert crd_errors(document) == []
            assert model_accepts(document)


@pytest.mark.parametrize("document", [AGENT, POLICY], ids=["Agent", "GatewayPolicy"])
def test_full_resources_are_valid(document: dict[str, Any]) -> None:
    assert [e.message for e in crd_errors(document)] == []
    assert model_accepts(document)


BAD = [
    ("rule without a name", without(POLICY, "spec.rules.0.name"), "'name' is a required"),
    ("action permit", with_value(POLICY, "spec.rules.0.action", "permit"), "'permit' is not one"),
    ("capability -bad", with_value(AGENT, "spec.capabilities.0", "-bad"), "does not match"),
    ("replicas -1", with_value(AGENT, "spec.replicas", -1), "less than the minimum of 0"),
    ("secret Bad", with_value(AGENT, "spec.env.1.valueFrom.secretKeyRef.name", "Bad"), "match"),
    ("pull secret ''", with_value(AGENT, "spec.imagePullSecrets.0.name", ""), "does not match"),
    ("priority Upper", with_value(AGENT, "spec.priorityClassName", "Upper"), "does not match"),
    ("name Bad_Name", with_value(AGENT, "metadata.name", "Bad_Name"), "does not match"),
    ("role UPPER", with_value(AGENT, "spec.roles.0", "UPPER"), "does not match"),
    ("env 1X", with_value(AGENT, "spec.env.0.name", "1X"), "does not match"),
    ("replicas 1.5", with_value(AGENT, "spec.replicas", 1.5), "is not of type 'integer'"),
    ("sidecar port 80", with_value(AGENT, "spec.sidecar.port", 80), "less than the minimum"),
    ("root user", with_value(AGENT, "spec.securityContext.runAsUser", 0), "less than the minimum"),
    ("fsGroup -1", with_value(AGENT, "spec.securityContext.fsGroup", -1), "less than the minimum"),
    ("deletion Keep", with_value(AGENT, "spec.deletionPolicy", "Keep"), "is not one of"),
    ("local command []", with_value(AGENT, "spec.local", {"command": []}), "should be non-empty"),
    ("rate 0", with_value(POLICY, "spec.rateLimits.0.rate", 0), "less than or equal to the min"),
    ("burst 0", with_value(POLICY, "spec.rateLimits.0.burst", 0), "less than the minimum"),
    ("scope pod", with_value(POLICY, "spec.rateLimits.0.scope", "pod"), "is not one of"),
    ("agents []", with_value(POLICY, "spec.agents", []), "should be non-empty"),
    ("agent glob a/b/c", with_value(POLICY, "spec.agents.0", "a/b/c"), "does not match"),
    ("type glob space", with_value(POLICY, "spec.rules.0.types.0", "a b"), "does not match"),
    ("dlp action drop", with_value(POLICY, "spec.dlp.detectors.email", "drop"), "is not one"),
    ("openSeconds 0", with_value(POLICY, "spec.circuitBreaker.openSeconds", 0), "minimum"),
    ("payloads raw", with_value(POLICY, "spec.audit.payloads", "raw"), "is not one of"),
    ("detector name", with_value(POLICY, "spec.dlp.custom.0.name", "Bad"), "does not match"),
]


@pytest.mark.parametrize(("document", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_resources_are_rejected_by_crd_and_model(
    document: dict[str, Any], message: str
) -> None:
    errors = crd_errors(document)
    assert errors, "the CRD schema accepted it"
    assert message in errors[0].message, errors[0].message
    assert not model_accepts(document), "the model accepted it"


def test_the_replicas_of_an_agent_on_kubernetes_are_bounded_by_its_deployment_only() -> None:
    # 0 stops the pods (KEDA scales to zero through the scale subresource); no maximum.
    for replicas in (0, 1000):
        document = with_value(AGENT, "spec.replicas", replicas)
        assert crd_errors(document) == []
        assert model_accepts(document)
    assert "maximum" not in schema_of("Agent")["properties"]["spec"]["properties"]["replicas"]


def test_unknown_fields_are_pruned_by_kubernetes_and_rejected_by_the_model() -> None:
    # apiextensions/v1 cannot forbid unknown fields (no additionalProperties: false): the API
    # server drops them, or rejects them under strict field validation; the models reject them.
    for document, path in (
        (AGENT, "spec.replica"),
        (AGENT, "spec.securityContext.privileged"),  # pruned: never reaches the operator
        (POLICY, "spec.rules.0.actions"),
    ):
        typo = with_value(document, path, 1)
        assert crd_errors(typo) == []
        assert not model_accepts(typo)


def test_what_only_the_model_checks() -> None:
    # Not expressible without CEL: built-in detector names, RE2 compilation, unique names, one
    # source of a variable's value (reported in the Agent's Ready condition as InvalidSpec).
    unknown_detector = with_value(POLICY, "spec.dlp.detectors", {"emial": "block"})
    empty_match = with_value(POLICY, "spec.dlp.custom.0.pattern", "a*")
    twice = with_value(POLICY, "spec.dlp.custom", [POLICY["spec"]["dlp"]["custom"][0]] * 2)
    two_sources = with_value(
        AGENT,
        "spec.env.1.valueFrom.fieldRef",
        {"fieldPath": "metadata.name"},
    )
    no_source = with_value(AGENT, "spec.env.1.valueFrom", {})
    value_and_source = with_value(AGENT, "spec.env.1.value", "clear text")
    both_refs = with_value(AGENT, "spec.envFrom.1.secretRef", {"name": "y"})
    for document in (
        unknown_detector,
        empty_match,
        twice,
        two_sources,
        no_source,
        value_and_source,
        both_refs,
    ):
        assert crd_errors(document) == []
        assert not model_accepts(document)


# The same regular expressions in the validators and in the CRD: agree on arbitrary strings.
_ALPHABET = st.sampled_from(list("abz09-._*/?:A Z"))


@pytest.mark.parametrize(
    ("document", "path"),
    [
        (AGENT, "spec.capabilities.0"),
        (AGENT, "spec.roles.0"),
        (AGENT, "metadata.name"),
        (AGENT, "spec.env.0.name"),
        (AGENT, "spec.serviceAccountName"),
        (POLICY, "spec.agents.0"),
        (POLICY, "spec.rules.0.from.agents.0"),
        (POLICY, "spec.rules.0.types.0"),
        (POLICY, "spec.rules.0.name"),
        (POLICY, "spec.rateLimits.0.name"),
    ],
)
def test_crd_patterns_agree_with_the_models(document: dict[str, Any], path: str) -> None:
    @given(st.lists(_ALPHABET, max_size=70).map("".join))
    def agree(value: str) -> None:
        changed = with_value(document, path, value)
        assert (crd_errors(changed) == []) == model_accepts(changed), repr(value)

    agree()


def test_the_builder_refuses_what_a_crd_cannot_express() -> None:
    class Union(BaseModel):
        value: int | str

    class Tuple(BaseModel):
        value: tuple[int, str]

    for model in (Union, Tuple):
        with pytest.raises(CrdSchemaError):
            model_schema(model)


# -- documented in the README ------------------------------------------------------------------


def _property_paths(node: dict[str, Any], path: str = "") -> Iterator[str]:
    if node.get("type") == "array" and "items" in node:
        yield from _property_paths(node["items"], path)
        return
    for name, child in (node.get("properties") or {}).items():
        child_path = f"{path}.{name}" if path else name
        yield child_path
        yield from _property_paths(child, child_path)


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## Reference: the `{title}` manifest")
    end = text.index("\n## ", start + 1)
    return text[start:end]


@pytest.mark.parametrize("kind", ["Agent", "GatewayPolicy"])
def test_every_crd_field_is_in_the_readme_reference(kind: str) -> None:
    schema = CRD_BY_KIND[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    title = kind
    section = _readme_section(title)
    missing = []
    for path in _property_paths(schema):
        if not path.startswith(("spec.", "status.")):
            continue
        parent, _, leaf = path.rpartition(".")
        documented = (
            f"`{path}`" in section
            or f"`{path}." in section
            or f"{leaf}:" in section
            or (f"`{parent}`" in section and leaf in section)
            or (parent in ("spec", "status") and f"`{leaf}`" in section)
            or (parent.startswith("status.") and f"`{leaf}`" in section)
        )
        if not documented:
            missing.append(path)
    assert missing == [], f"fields missing from the README's {title} reference"


def test_no_crd_default_is_an_empty_string() -> None:
    """Kubernetes 1.20 turns ``default: ""`` into null and rejects the whole CRD."""

    def defaults(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            if "default" in node:
                yield node["default"]
            for value in node.values():
                yield from defaults(value)
        elif isinstance(node, list):
            for value in node:
                yield from defaults(value)

    for crd in CRD_BY_KIND.values():
        assert "" not in list(defaults(crd))
