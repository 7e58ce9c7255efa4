"""``mas --version``, ``mas policy validate`` and ``mas policy apply``, and list commands with
nothing to list.

``validate`` reports every problem of every manifest, in the words the operator's status uses;
``apply`` publishes what ``validate`` accepts, as the control plane does, and a running sidecar
enforces it; a manifest with a problem publishes nothing.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
import yaml
from waiting import eventually

from mas_cli.main import main
from mas_core.keys import POLICY_REVISION
from mas_operator.policies import validate_policy

if TYPE_CHECKING:
    from conftest import Sidecars

ALICE_TO_BOB = """
apiVersion: mas.dev/v1alpha1
kind: GatewayPolicy
metadata:
  name: alice-to-bob
spec:
  agents: ["*"]
  rules:
    - name: greetings
      action: allow
      from: {agents: [alice]}
      to: {agents: [bob]}
      types: ["greeting.*"]
  signing: {required: false}
"""
# Three problems in one manifest, and a second manifest with one more.
BROKEN = """
apiVersion: mas.dev/v1alpha1
kind: GatewayPolicy
metadata:
  name: broken
spec:
  rules:
    - name: bad-action
      action: maybe
  dlp:
    custom:
      - name: unbalanced
        pattern: "([a-z"
        action: block
  colour: blue
---
apiVersion: mas.dev/v1alpha1
kind: GatewayPolicy
metadata:
  name: also-broken
spec:
  rateLimits:
    - name: negative
      rate: -1
      burst: 1
"""


def _write(directory: Path, **files: str) -> Path:
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def test_version_names_the_installed_distribution() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mas_cli", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("mas ")
    assert result.stdout.split()[1][0].isdigit()


def test_validate_reports_every_problem_of_every_manifest_as_the_operator_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _write(tmp_path / "policies", **{"good.yaml": ALICE_TO_BOB, "bad.yaml": BROKEN})

    status = main(["policy", "validate", str(directory)])

    assert status == 2
    errors = capsys.readouterr().err.splitlines()
    problems = [line for line in errors if line.startswith("mas: error: ")]
    assert len(problems) == 4, errors
    assert errors[-1] == "4 problems; nothing published"
    for document in yaml.safe_load_all(BROKEN):
        _, operator_says = validate_policy(document)
        assert operator_says is not None
        first = operator_says.split(" (and ")[0]
        assert any(line.endswith(first) for line in problems), (first, problems)
    assert any("spec.colour: unknown field" in line for line in problems)
    assert all(str(directory / "bad.yaml") in line for line in problems)


def test_validate_accepts_the_example_policy_and_prints_its_revision(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = Path(__file__).parent.parent / "examples" / "healthcare" / "policy.yaml"

    assert main(["policy", "validate", str(example)]) == 0

    out = capsys.readouterr().out
    assert "valid: GatewayPolicy default/healthcare" in out
    assert "compiled revision " in out


def test_validate_says_when_there_is_no_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "validate", str(tmp_path)]) == 2
    assert "no mas.dev/v1alpha1 GatewayPolicy manifests" in capsys.readouterr().err


async def test_apply_publishes_a_policy_that_a_running_sidecar_enforces(
    sidecars: Sidecars, redis_url: str, tmp_path: Path
) -> None:
    alice = sidecars.start("default/alice")
    sidecars.start("default/bob")
    async with alice.client() as client:
        await client.send("bob", "note", {})  # the fixture's policy allows everything
        directory = _write(tmp_path / "policies", **{"policy.yaml": ALICE_TO_BOB})

        assert main(["policy", "apply", str(directory), "--redis-url", redis_url]) == 0

        async def refused() -> bool:
            try:
                await client.send("bob", "note", {})
            except Exception as exc:
                return getattr(exc, "code", None) == "forbidden"
            return False

        await eventually(refused, "the note refused by the applied policy")
        assert await client.send("bob", "greeting.hello", {})


def test_apply_publishes_nothing_when_a_manifest_has_a_problem(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    before = client.get(POLICY_REVISION)
    directory = _write(tmp_path / "policies", **{"good.yaml": ALICE_TO_BOB, "bad.yaml": BROKEN})

    assert main(["policy", "apply", str(directory), "--redis-url", redis_url]) == 2

    assert client.get(POLICY_REVISION) == before
    client.close()


async def test_listing_no_dead_letters_says_so(
    sidecars: Sidecars, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = sidecars.start("default/alice")
    monkeypatch.setenv("MAS_SIDECAR_TOKEN", alice.token)

    status = await asyncio.to_thread(main, ["dead-letters", "list", "--sidecar", alice.url])

    assert status == 0
    captured = capsys.readouterr()
    assert (captured.out, captured.err.strip()) == ("", "no dead letters")
