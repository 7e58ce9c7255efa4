"""``examples/a2a`` under ``mas up``: an A2A client written with the ``a2a-sdk`` alone asks a
mas agent, through its sidecar's gateway checks, on loopback; and the mas agent asks an A2A-only
agent (the glossary, an ``a2a-sdk`` server) through the same checks.

The example is copied with its A2A port and the glossary's replaced by free ones (ports are
shared with whatever else runs on the machine), and its client's API key and the glossary's
token come from a secrets file written here: the example holds none.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from test_local_mode import MasUp, assert_no_survivors

from mas_cli.local.plan import a2a_client_keys, sidecar_env
from mas_cli.local.redis_server import free_port
from mas_cli.local.secrets import LocalSecrets
from mas_cli.manifest_files import load_directory
from mas_core.a2a_card import agent_card
from mas_core.manifests import ManifestError, parse_agent

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "a2a"
KEY = "partner-example-key-0123456789"
GLOSSARY_TOKEN = "glossary-example-token-0123456789"
WAIT_S = 40.0


def _copy(tmp_path: Path) -> tuple[Path, int, int]:
    folder = tmp_path / "a2a"
    shutil.copytree(EXAMPLE, folder)
    port, glossary_port = free_port(), free_port()
    manifest = folder / "assistant.yaml"
    manifest.write_text(manifest.read_text().replace("port: 8791", f"port: {port}"))
    glossary = folder / "glossary.yaml"
    glossary.write_text(glossary.read_text().replace(":8799/", f":{glossary_port}/"))
    return folder, port, glossary_port


def _wait_serving(port: int, process: subprocess.Popen[str]) -> None:
    """Until ``process`` accepts connections on ``port`` (polled, bounded only against a hang)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"the glossary never served on {port}")


def _ask(port: int, text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(folder / "partner.py"), f"http://127.0.0.1:{port}", text],
        env={"A2A_API_KEY": KEY, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip


def test_an_a2a_sdk_client_asks_the_example_assistant_through_mas_up(tmp_path: Path) -> None:
    folder, port, glossary_port = _copy(tmp_path)
    secrets = tmp_path / "secrets"
    secrets.write_text(f"a2a-partner/api-key={KEY}\na2a-glossary/token={GLOSSARY_TOKEN}\n")
    secrets.chmod(0o600)
    glossary = subprocess.Popen(
        [sys.executable, str(folder / "glossary.py"), str(glossary_port)],
        env={"A2A_TOKEN": GLOSSARY_TOKEN, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    args = ("--secrets", str(secrets), "--ephemeral", "--duration", "60", "--log-dir", "logs")
    try:
        _wait_serving(glossary_port, glossary)
        with MasUp(str(folder), *args, cwd=tmp_path) as up:
            card = up.wait_for(r"A2A: default/assistant-0 serves its card at (\S+)", timeout=WAIT_S)
            assert card[1] == f"http://127.0.0.1:{port}/.well-known/agent-card.json"
            up.wait_for(r"agent default/assistant-0 started", timeout=WAIT_S)
            asked = _ask(port, "Summarize: The quick brown fox jumps. It was happy.", folder)
            up.wait_for(r"A2A call from external/partner", timeout=WAIT_S)
            defined = _ask(port, "Define: sidecar", folder)
            status, output = up.interrupt()
    finally:
        glossary.terminate()
        glossary.wait(timeout=WAIT_S)
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.splitlines() == [
        "card: default/assistant, skills ['summarize']",
        "answer: 8 words, 2 sentences; the longest word is 'quick'",
    ]
    assert defined.returncode == 0, defined.stderr
    assert defined.stdout.splitlines()[1:] == [
        "progress: asking the glossary",
        "answer: sidecar: a process next to an agent that checks and carries its messages",
    ]
    assert status == 0, output
    assert KEY not in output and GLOSSARY_TOKEN not in output
    assert re.search(r"audit trail of default/assistant: \d+ entries .* intact", output)
    assert_no_survivors(output)


def test_each_local_replica_serves_a2a_on_a_port_of_its_own() -> None:
    (agent,), _ = load_directory(EXAMPLE)
    ports = [orjson.loads(sidecar_env(agent, index)["MAS_A2A"])["port"] for index in range(3)]
    assert ports == [8791, 8792, 8793]
    assert sidecar_env(agent, 0)["MAS_A2A_HOST"] == "127.0.0.1"


def test_a_client_key_missing_from_the_secrets_file_stops_mas_up_before_it_starts() -> None:
    (agent,), _ = load_directory(EXAMPLE)
    with pytest.raises(ManifestError, match=re.escape("a2a-partner/api-key=... to DIR/.secrets")):
        a2a_client_keys(agent, LocalSecrets())
    assert a2a_client_keys(agent, LocalSecrets({("a2a-partner", "api-key"): KEY})) == {
        "partner": KEY
    }


def test_the_card_in_the_docs_is_the_example_assistants() -> None:
    (agent,), _ = load_directory(EXAMPLE)
    text = (EXAMPLE.parent.parent / "docs" / "a2a.md").read_text()
    documented = orjson.loads(re.search(r"```json\n(.*?)\n```", text, re.DOTALL)[1])  # type: ignore[index]
    url = "http://127.0.0.1:8791/"
    assert documented == agent_card(
        agent_id=agent.agent_id, capabilities=agent.spec.capabilities, spec=agent.spec.a2a, url=url
    )


def test_the_a2a_port_may_not_be_the_sidecars() -> None:
    (agent,), _ = load_directory(EXAMPLE)
    document = agent.model_dump(mode="json", by_alias=True, exclude_none=True)
    document["spec"]["sidecar"]["port"] = 8791
    with pytest.raises(ManifestError, match=r"spec: a2a.port must differ from sidecar.port"):
        parse_agent(document, "assistant.yaml")


def test_the_a2a_port_may_not_be_the_sidecars_metrics_port() -> None:
    (agent,), _ = load_directory(EXAMPLE)
    document = agent.model_dump(mode="json", by_alias=True, exclude_none=True)
    document["spec"]["sidecar"]["metricsPort"] = 8791
    with pytest.raises(ManifestError, match=r"a2a.port must differ from .*sidecar.metricsPort"):
        parse_agent(document, "assistant.yaml")
