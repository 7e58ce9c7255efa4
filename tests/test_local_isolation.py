"""What ``mas up`` keeps apart, played by a hostile agent in a real run.

A folder holds a harmless ``victim`` agent and a ``thief`` agent whose program attacks
everything within reach and reports each outcome as an ``ATTACK`` JSON line: it finds the other
sidecars of its run by their (world-readable) command lines, posts and reads through them with
no token and with its own, and tries to read every secret of the run: other processes'
environments, the sidecars' credential files and the embedded Redis's kept data (its ACL file
and append-only files, in the state directory). The tests check its report and what is left
in Redis, and look at every process ``mas up`` started: no secret on a command line or in an
environment where it does not belong, an embedded Redis that refuses clients without its
password, and no private key left on disk.

Separate users need root (and an interpreter other users can reach); without them the last test
is skipped, saying why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from streams import waiting_for
from test_local_mode import QUICKSTART, MasUp

import mas
from mas_cli.local.users import DEFAULT_UID_BASE, EXECUTE, READ, RunAs, unreachable

THIEF = r'''
"""A hostile agent: acts through, reads from and steals from whatever it can reach."""
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

OWN_PORT = int(os.environ["MAS_SIDECAR_URL"].rsplit(":", 1)[1])
OWN_TOKEN = os.environ.get("MAS_SIDECAR_TOKEN", "")
SECRETS = ("MAS_SIDECAR_TOKEN=", "MAS_REDIS_URL=", "MAS_REDIS_PASSWORD=", "redis://")


def report(**fields):
    print("ATTACK " + json.dumps(fields, sort_keys=True), flush=True)


def parent(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def run_mates():
    """The processes mas up started (the thief's siblings), and their command lines."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and parent(entry.name) == os.getppid():
                yield int(entry.name), (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            pass


def call(port, method, path, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, ""
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}").get("error", {}).get("code", "")


sidecars, mates = {}, []
for pid, args in run_mates():
    mates.append(pid)
    if b"mas_sidecar" in args:
        sidecars[int(args[args.index(b"--port") + 1])] = args[args.index(b"--agent-id") + 1]
for port, agent in sorted(sidecars.items()):
    if port == OWN_PORT:
        continue
    for token_name, token in (("none", None), ("own", OWN_TOKEN), ("wrong", "x" * 43)):
        status, code = call(
            port, "POST", "/v1/messages", token, {"to": "thief", "type": "stolen", "payload": {}}
        )
        report(what="send", target=agent.decode(), token=token_name, status=status, code=code)
        status, code = call(port, "GET", "/v1/state", token)
        report(what="state", target=agent.decode(), token=token_name, status=status, code=code)
for token_name, token in (("none", None), ("own", OWN_TOKEN)):
    status, code = call(OWN_PORT, "GET", "/v1/self", token)
    report(what="self", target="own", token=token_name, status=status, code=code)

# Steal: every environment of the run, and the sidecars' credential files.
for pid in [os.getppid(), *(mate for mate in mates if mate != os.getpid())]:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        continue
    for line in environ.split("\0"):
        if line.startswith(SECRETS) or ("redis://" in line and "@" in line):
            report(what="stolen", source=f"environ of {pid}", secret=line)
report(what="own environ", readable=OWN_TOKEN in Path("/proc/self/environ").read_text())
report(what="uid", uid=os.getuid())
# The embedded Redis's data, kept in the state directory the tests put in this folder.
kept = Path("state", "redis")
for path in (kept / "users.acl", kept / "appendonlydir" / "appendonly.aof.manifest"):
    try:
        report(what="stolen", source=str(path), secret=path.read_text())
    except OSError:
        pass
try:
    report(what="stolen", source=str(kept), secret=os.listdir(kept))
except OSError:
    pass
for run_dir in Path(tempfile.gettempdir()).glob("mas-up-*"):
    for agent in sidecars.values():
        for name in ("agent.key", "redis-url", "api-token", "token"):
            path = run_dir / agent.decode().replace("/", "_") / name
            try:
                report(what="stolen", source=str(path), secret=path.read_text())
            except OSError:
                pass
report(what="done")
'''

FOLDER = {
    "victim.py": "from mas import Agent\n\nAgent().run()\n",
    "thief.py": THIEF,
    "agents.yaml": """
apiVersion: mas.dev/v1alpha1
kind: Agent
metadata: {name: victim}
spec: {capabilities: [victim], local: {command: [python, victim.py]}}
---
apiVersion: mas.dev/v1alpha1
kind: Agent
metadata: {name: thief}
spec: {local: {command: [python, thief.py]}}
---
apiVersion: mas.dev/v1alpha1
kind: GatewayPolicy
metadata: {name: everything}
spec:
  rules: [{name: all, action: allow}]
""",
}


@pytest.fixture
def folder() -> Iterator[Path]:
    """The attack folder, where other users may read it (``tmp_path`` is private)."""
    directory = Path(tempfile.mkdtemp(prefix="mas-attack-"))
    directory.chmod(0o755)
    for name, text in FOLDER.items():
        (directory / name).write_text(text)
    yield directory
    shutil.rmtree(directory)


def attacks(output: str) -> list[dict[str, Any]]:
    """The thief's report."""
    return [
        json.loads(line.split("ATTACK ", 1)[1]) for line in output.splitlines() if "ATTACK " in line
    ]


def run_thief(folder: Path, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    """``mas up`` on the attack folder until the thief has reported everything; the output.
    The state directory is in the folder, where the thief looks for the kept Redis data."""
    args = ("--log-dir", str(tmp_path / "logs"), "--state-dir", str(folder / "state"))
    with MasUp(str(folder), *args, cwd=tmp_path, env=env) as up:
        up.wait_for(r'ATTACK \{"what": "done"\}', timeout=120)
        status, output = up.interrupt()
    assert status == 0, output
    return output


def test_an_agent_can_neither_act_through_nor_read_another_agents_sidecar(
    folder: Path, tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    url_file = tmp_path / "redis-url"
    url_file.write_text(redis_url)
    url_file.chmod(0o600)
    output = run_thief(folder, tmp_path, {"MAS_REDIS_URL_FILE": str(url_file)})
    report = attacks(output)

    tried = [(a["what"], a["token"], a["status"], a["code"]) for a in report if a.get("target")]
    assert sorted(tried) == sorted(
        [(what, token, 401, "unauthenticated_client")
         for what in ("send", "state") for token in ("none", "own", "wrong")]
        + [("self", "none", 401, "unauthenticated_client"), ("self", "own", 200, "")]
    ), output  # fmt: skip
    assert waiting_for(redis_client, "default/thief") == []  # nothing was sent


def run_processes(pid: int) -> dict[int, tuple[bytes, bytes]]:
    """``pid`` and the processes it started: their command lines and environments."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if int(entry.name) == pid or ppid == pid:
                found[int(entry.name)] = (
                    (entry / "cmdline").read_bytes(),
                    (entry / "environ").read_bytes(),
                )
        except (OSError, ValueError):
            continue
    return found


def environ_value(environ: bytes, name: str) -> str | None:
    for item in environ.split(b"\0"):
        if item.startswith(name.encode() + b"="):
            return item.split(b"=", 1)[1].decode()
    return None


def test_the_embedded_redis_refuses_strangers_and_no_process_shows_a_secret(
    tmp_path: Path,
) -> None:
    with MasUp(str(QUICKSTART), "--log-dir", str(tmp_path / "logs"), cwd=tmp_path) as up:
        port = int(up.wait_for(r"redis ready at redis://(?:\S*@)?127\.0\.0\.1:(\d+)/0")[1])
        up.wait_for(r"^pinger\[0\] \| ping \d+ -> pong ")
        stranger = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
        with pytest.raises(redis.AuthenticationError):
            stranger.ping()
        stranger.close()

        seen = run_processes(up.process.pid)
        sidecar_dirs = {
            Path(directory)
            for _, environ in seen.values()
            if (directory := environ_value(environ, "MAS_CREDENTIALS_DIR"))
        }
        names = ("redis-url", "api-token")
        secrets = [(d / name).read_text().strip() for d in sidecar_dirs for name in names]
        status, output = up.interrupt()

    assert status == 0, output
    assert len(sidecar_dirs) == 2 and len(secrets) == 4
    for pid, (cmdline, environ) in seen.items():
        for text in (cmdline, environ):
            assert b"requirepass" not in text and b"MAS_REDIS_URL=" not in text, pid
            assert not re.search(rb"redis://[^@\s\0]*:[^@\s\0]+@", text), pid
        assert not any(secret.encode() in cmdline for secret in secrets), pid
        token = environ_value(environ, "MAS_SIDECAR_TOKEN")
        others = [s for s in secrets if s != token]  # an agent holds its own token only
        assert not any(secret.encode() in environ for secret in others), pid
    assert not any(directory.exists() for directory in sidecar_dirs)  # removed at the stop
    kept = [p for p in tmp_path.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert kept == []
    said = [line for line in output.splitlines() if re.search("isolated|of their own", line)]
    assert len(said) == 1, said  # what is isolated, said once at start


def isolation_unavailable() -> str | None:
    """Why this machine cannot run agents as users of their own, or None."""
    if os.geteuid() != 0:
        return "mas up isolates agents only when it runs as root"
    needs = [
        Path(sys.executable),
        Path(sysconfig.get_paths()["purelib"]),
        Path(mas.__file__).parent,
    ]
    for path in needs:
        why = unreachable(path, RunAs(DEFAULT_UID_BASE, DEFAULT_UID_BASE), READ | EXECUTE)
        if why is not None:
            return f"other users cannot reach {path} ({why})"
    return None


def test_as_root_an_agent_can_read_no_secret_of_another_agent_or_any_sidecar(
    folder: Path, tmp_path: Path
) -> None:
    why = isolation_unavailable()
    if why is not None:
        pytest.skip(why)
    output = run_thief(folder, tmp_path)
    report = attacks(output)

    assert [a for a in report if a["what"] == "stolen"] == [], output
    assert (folder / "state" / "redis" / "users.acl").is_file()  # there, out of its reach
    assert "agents and their sidecars run as users of their own" in output
    assert {"what": "own environ", "readable": True} in report  # the reading itself works
    [uid] = [a["uid"] for a in report if a["what"] == "uid"]
    assert uid >= DEFAULT_UID_BASE
