"""``mas up`` and ``spec.env[].valueFrom``: a Secret's key from the secrets file or the
environment, a field of the replica, refused with a clear error when found nowhere
(:mod:`mas_cli.local.secrets`), and given to the agent program that names it only."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mas_cli.local.plan import plan_replicas
from mas_cli.local.secrets import EnvReferences, LocalSecrets, load_secrets
from mas_core.manifests import AgentManifest, ManifestError, parse_agent

MAS = [sys.executable, "-c", "import sys; from mas_cli.main import main; sys.exit(main())"]
KEY = "sk-local-0123456789"
OPENAI = {"secretKeyRef": {"name": "openai", "key": "api-key"}}


def agent(name: str = "doctor", replicas: int = 1, **spec: Any) -> AgentManifest:
    return parse_agent(
        {
            "apiVersion": "mas.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": name, "namespace": "clinic"},
            "spec": {"replicas": replicas, "local": {"command": ["true"]}, **spec},
        },
        "test",
    )


def secrets_file(tmp_path: Path, text: str) -> LocalSecrets:
    path = tmp_path / ".secrets"
    path.write_text(text)
    path.chmod(0o600)
    return LocalSecrets.read(path)


def test_the_secrets_file_has_one_secret_key_and_value_a_line(tmp_path: Path) -> None:
    secrets = secrets_file(
        tmp_path, f"# the OpenAI key\n\nopenai/api-key={KEY}\ndb/url=postgres://u:p=q@h/db\n"
    )
    assert secrets.values == {("openai", "api-key"): KEY, ("db", "url"): "postgres://u:p=q@h/db"}
    assert KEY not in repr(secrets) and KEY not in repr(EnvReferences(secrets))
    assert not secrets.readable_by_others()
    (tmp_path / ".secrets").chmod(0o644)
    assert secrets.readable_by_others()


def test_a_malformed_line_is_named_without_its_value(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        secrets_file(tmp_path, f"openai/api-key={KEY}\nOPENAI_API_KEY={KEY}\n")
    assert "line 2: not secret-name/key=value" in str(caught.value)
    assert KEY not in str(caught.value)


def test_the_file_is_dir_secrets_unless_named(tmp_path: Path) -> None:
    assert load_secrets(tmp_path, None).values == {}
    (tmp_path / ".secrets").write_text("a/b=1\n")
    assert load_secrets(tmp_path, None).values == {("a", "b"): "1"}
    other = tmp_path / "elsewhere"
    other.write_text("a/b=2\n")
    assert load_secrets(tmp_path, other).values == {("a", "b"): "2"}
    with pytest.raises(ManifestError, match="cannot read the secrets file"):
        load_secrets(tmp_path, tmp_path / "missing")


def test_a_secret_reaches_the_agent_that_names_it_and_no_sidecar(tmp_path: Path) -> None:
    references = EnvReferences(secrets_file(tmp_path, f"openai/api-key={KEY}\n"), {})
    doctor = agent(
        replicas=2,
        env=[
            {"name": "OPENAI_API_KEY", "valueFrom": OPENAI},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
    )
    plans = plan_replicas([doctor, agent("patient")], tmp_path, itertools.count(41000), references)
    assert [p.agent_env.get("OPENAI_API_KEY") for p in plans] == [KEY, KEY, None]
    assert [p.agent_env.get("POD") for p in plans] == ["doctor-0", "doctor-1", None]
    assert plans[0].agent_env["NS"] == "clinic"
    assert all(KEY not in repr(plan.sidecar_env) for plan in plans)


def test_the_environment_stands_in_for_what_the_file_lacks(tmp_path: Path) -> None:
    references = EnvReferences(LocalSecrets(), {"OPENAI_API_KEY": "from-env", "MODEL": "m"})
    doctor = agent(
        env=[
            {"name": "OPENAI_API_KEY", "valueFrom": OPENAI},
            {"name": "MODEL", "valueFrom": {"configMapKeyRef": {"name": "llm", "key": "model"}}},
        ]
    )
    (plan,) = plan_replicas([doctor], tmp_path, itertools.count(41000), references)
    assert (plan.agent_env["OPENAI_API_KEY"], plan.agent_env["MODEL"]) == ("from-env", "m")
    # The file wins over the environment.
    both = EnvReferences(secrets_file(tmp_path, "openai/api-key=from-file\n"), references.environ)
    (plan,) = plan_replicas([doctor], tmp_path, itertools.count(41000), both)
    assert plan.agent_env["OPENAI_API_KEY"] == "from-file"


def test_an_optional_reference_found_nowhere_leaves_the_variable_unset(tmp_path: Path) -> None:
    optional = {"secretKeyRef": {**OPENAI["secretKeyRef"], "optional": True}}
    doctor = agent(env=[{"name": "OPENAI_API_KEY", "valueFrom": optional}])
    (plan,) = plan_replicas([doctor], tmp_path, itertools.count(41000), EnvReferences())
    assert "OPENAI_API_KEY" not in plan.agent_env


def test_a_missing_secret_is_refused_saying_where_its_value_may_come_from(tmp_path: Path) -> None:
    doctor = agent(env=[{"name": "OPENAI_API_KEY", "valueFrom": OPENAI}])
    with pytest.raises(ManifestError) as caught:
        plan_replicas([doctor], tmp_path, itertools.count(41000), EnvReferences())
    assert str(caught.value) == (
        "Agent clinic/doctor: spec.env[0] (OPENAI_API_KEY): Secret openai key api-key has no "
        "local value: add the line openai/api-key=... to DIR/.secrets (or the file --secrets "
        "names), or set OPENAI_API_KEY in mas up's environment"
    )


def test_mas_up_refuses_a_missing_secret_before_starting_anything(tmp_path: Path) -> None:
    document = {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "doctor"},
        "spec": {
            "env": [{"name": "OPENAI_API_KEY", "valueFrom": OPENAI}],
            "local": {"command": ["true"]},
        },
    }
    (tmp_path / "doctor.yaml").write_text(yaml.safe_dump(document))
    run = subprocess.run(
        [*MAS, "up", str(tmp_path), "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    assert run.stderr.startswith(
        "mas: error: Agent default/doctor: spec.env[0] (OPENAI_API_KEY): Secret openai key "
        "api-key has no local value"
    )
    assert not (tmp_path / "state").exists()
