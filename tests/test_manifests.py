"""The Agent manifest models and the directory loader: what loads, and each error's message."""

from __future__ import annotations

from pathlib import Path

import pytest

from mas_cli.manifest_files import load_agents, load_directory
from mas_core.manifests import ManifestError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "quickstart"

VALID = """\
apiVersion: mas.dev/v1alpha1
kind: Agent
metadata:
  name: worker
spec:
  capabilities: [work, summarize.v2]
  replicas: 3
  image: example/worker:1
  env: [{name: GREETING, value: hello}]
  delivery: {maxAttempts: 7, leaseSeconds: 12}
  local:
    command: [python, worker.py]
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def load_error(directory: Path) -> str:
    with pytest.raises(ManifestError) as caught:
        load_agents(directory)
    return str(caught.value)


def test_quickstart_example_loads() -> None:
    agents = {agent.agent_id: agent for agent in load_agents(EXAMPLE)}
    assert set(agents) == {"default/pinger", "default/ponger"}
    ponger = agents["default/ponger"].spec
    assert ponger.capabilities == ["pong"]
    assert ponger.local is not None and ponger.local.command == ["python", "ponger.py"]


def test_full_manifest_fields(tmp_path: Path) -> None:
    write(tmp_path, "worker.yaml", VALID)
    (agent,) = load_agents(tmp_path)
    assert agent.agent_id == "default/worker"
    assert agent.spec.replicas == 3
    assert agent.spec.delivery.max_attempts == 7
    assert agent.spec.delivery.lease_seconds == 12
    assert [(var.name, var.value) for var in agent.spec.env] == [("GREETING", "hello")]
    assert agent.spec.image == "example/worker:1"


def test_defaults_and_explicit_namespace(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yml",
        "apiVersion: mas.dev/v1alpha1\nkind: Agent\nmetadata: {name: a, namespace: team-x}\n"
        "spec: {local: {command: [./a]}}\n",
    )
    (agent,) = load_agents(tmp_path)
    assert agent.agent_id == "team-x/a"
    assert agent.spec.replicas == 1
    assert agent.spec.capabilities == []
    assert agent.spec.delivery.max_attempts == 5
    assert agent.spec.delivery.lease_seconds == 30


def test_multi_document_files_skip_other_kinds(tmp_path: Path) -> None:
    other = VALID.replace("name: worker", "name: other")
    write(
        tmp_path,
        "all.yaml",
        "apiVersion: mas.dev/v1alpha1\nkind: GatewayPolicy\nmetadata: {name: p}\nspec: {}\n"
        f"---\n{VALID}---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n"
        f"---\n{other}",
    )
    write(tmp_path, "notes.txt", "not a manifest")
    assert [agent.agent_id for agent in load_agents(tmp_path)] == [
        "default/worker",
        "default/other",
    ]


def test_gateway_policies_load_beside_agents_and_are_validated(tmp_path: Path) -> None:
    policy = (
        "apiVersion: mas.dev/v1alpha1\nkind: GatewayPolicy\nmetadata: {name: p}\n"
        "spec:\n  rules:\n  - {name: all, action: allow, to: {agents: [worker]}}\n"
    )
    write(tmp_path, "agent.yaml", VALID)
    write(tmp_path, "policy.yaml", policy)

    _, [loaded] = load_directory(tmp_path)

    assert loaded.spec.rules[0].targets.agents == ["worker"]
    write(tmp_path, "policy.yaml", policy.replace("action: allow", "action: permit"))
    with pytest.raises(
        ManifestError, match=r"policy.yaml: spec.rules\[0\].action: Input should be"
    ):
        load_directory(tmp_path)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  replicas: 3", "  replicas: 3\n  replica: 2", "spec.replica: unknown field"),
        ("name: worker", "name: Worker_1", "metadata.name: must be a DNS-1123 label"),
        ("[work, summarize.v2]", "[work, -bad]", "spec.capabilities[1]: must be 1-63 characters"),
        ("replicas: 3", "replicas: 21", "spec.replicas: mas up runs 1 to 20 replicas of an agent"),
        ("replicas: 3", "replicas: 0", "spec.replicas: mas up runs 1 to 20 replicas of an agent"),
        ("replicas: 3", "replicas: -1", "spec.replicas: Input should be greater than or equal"),
        ("{maxAttempts: 7,", "{maxAttempts: 0,", "spec.delivery.maxAttempts: Input should be"),
        ("name: GREETING", "name: 1GREETING", "spec.env[0].name: must consist of letters"),
        ("value: hello}", "value: hello, from: x}", "spec.env[0].from: unknown field"),
        ("[python, worker.py]", "[]", "spec.local.command: List should have at least 1 item"),
        ("kind: Agent\n", "kind: Agent\nstatus: {}\n", "status: unknown field"),
        ("metadata:\n  name: worker\n", "metadata: {}\n", "metadata.name: Field required"),
    ],
)
def test_invalid_field_names_file_and_path(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in VALID
    path = write(tmp_path, "worker.yaml", VALID.replace(old, new))
    assert load_error(tmp_path).startswith(f"{path}: {expected}")


def test_several_errors_are_counted(tmp_path: Path) -> None:
    write(tmp_path, "w.yaml", VALID.replace("replicas: 3", "replicas: -1\n  foo: 1"))
    assert load_error(tmp_path).endswith("(and 1 more error)")


def test_missing_local_command(tmp_path: Path) -> None:
    path = write(tmp_path, "w.yaml", VALID.split("  local:", maxsplit=1)[0])
    message = load_error(tmp_path)
    assert message == f"{path}: spec.local.command: required to run default/worker locally"


def test_duplicate_agent_ids(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", VALID)
    second = write(tmp_path, "b.yaml", VALID)
    message = load_error(tmp_path)
    assert message.startswith(f"{second}: metadata.name: agent default/worker")
    assert message.endswith(f"already defined in {first}")


def test_duplicate_in_one_file_names_the_document(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", f"{VALID}---\n{VALID}")
    assert load_error(tmp_path).startswith(f"{path} (document 2): metadata.name")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "kind: Agent\nspec: [unclosed\n")
    message = load_error(tmp_path)
    assert message.startswith(f"{path}: line ")
    assert "invalid YAML" in message


def test_document_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "list.yaml", "- a\n- b\n")
    assert load_error(tmp_path) == f"{path}: a manifest must be a mapping, not list"


def test_unsupported_mas_api_version(tmp_path: Path) -> None:
    path = write(tmp_path, "w.yaml", VALID.replace("v1alpha1", "v9"))
    assert load_error(tmp_path) == f"{path}: apiVersion: 'mas.dev/v9' is not 'mas.dev/v1alpha1'"


def test_directory_without_agents(tmp_path: Path) -> None:
    write(tmp_path, "c.yaml", "apiVersion: v1\nkind: ConfigMap\n")
    assert "no mas.dev/v1alpha1 Agent manifests" in load_error(tmp_path)


def test_not_a_directory(tmp_path: Path) -> None:
    assert load_error(tmp_path / "missing") == f"{tmp_path / 'missing'}: not a directory"
