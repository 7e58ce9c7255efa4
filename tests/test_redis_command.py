"""``mas redis-server``: the embedded Valkey the Helm chart runs, started for real on loopback.

Each test runs ``python -m mas_cli redis-server`` as a child process on a free loopback port with a
password in ``MAS_REDIS_PASSWORD`` and talks to it with redis-py: the password, persistence of
data (append-only file) and of ACL users (ACL file) across restarts, and who may read the files.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from waiting import GUARD_SECONDS

from mas_cli.local.redis_server import RedisServer, ServerSettings, free_port, server_config
from mas_control.acl_file import acl_file_text, save_acl_users

PASSWORD = 'pa ss"wo\\rd-Ω'  # spaces, quotes, a backslash and non-ASCII survive the config


def _client(port: int, **auth: str) -> redis.Redis:
    """A client that fails at once (redis-py retries a refused AUTH with back-off otherwise)."""
    return redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0), **auth)


def _start(
    data_dir: Path, port: int, *extra: str, password: str | None = PASSWORD
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "MAS_REDIS_PASSWORD"}
    if password is not None:
        env["MAS_REDIS_PASSWORD"] = password
    command = [sys.executable, "-m", "mas_cli", "redis-server", "--port", str(port)]
    if os.environ.get("MAS_TEST_REDIS_SERVER"):  # the suite's other server, as conftest says
        command += ["--binary", os.environ["MAS_TEST_REDIS_SERVER"]]
    command += ["--bind", "127.0.0.1", "--dir", str(data_dir), "--loglevel", "warning", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_ready(process: subprocess.Popen[bytes], port: int, password: str = PASSWORD) -> None:
    """Until the server serves commands: it accepts connections before it has loaded its data
    (answering ``LOADING``), so a restarted server is ready only once ``INFO`` says loaded."""
    deadline = time.monotonic() + GUARD_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else b""
        with contextlib.suppress(redis.ConnectionError), _client(port, password=password) as client:
            if client.info("persistence")["loading"] == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"no server on port {port}")


@contextlib.contextmanager
def _server(
    data_dir: Path, *extra: str, password: str = PASSWORD
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    process = _start(data_dir, port, *extra, password=password)
    try:
        _wait_ready(process, port, password)
        yield process, port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_server_requires_the_password_and_accepts_acl_setuser(tmp_path: Path) -> None:
    with _server(tmp_path) as (_, port):
        anonymous = _client(port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        with pytest.raises(redis.AuthenticationError):
            _client(port, password="wrong").ping()
        admin = _client(port, password=PASSWORD)
        assert admin.ping()
        assert admin.acl_setuser(
            "mas-agent.ns.a", enabled=True, passwords=["+agent-secret"], commands=["+ping"]
        )
        agent = _client(port, username="mas-agent.ns.a", password="agent-secret")
        assert agent.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            agent.set("k", "v")
        for client in (anonymous, admin, agent):
            client.close()


def test_server_replaces_the_python_process_and_keeps_the_password_off_argv_env_and_disk(
    tmp_path: Path,
) -> None:
    with _server(tmp_path) as (process, _):
        proc = Path(f"/proc/{process.pid}")
        assert "valkey" in os.readlink(proc / "exe") or "redis" in os.readlink(proc / "exe")
        secret = PASSWORD.encode()
        assert secret not in (proc / "cmdline").read_bytes()
        assert secret not in (proc / "environ").read_bytes()
        for path in tmp_path.rglob("*"):
            assert not path.is_file() or secret not in path.read_bytes(), path


def test_server_with_appendonly_keeps_data_across_restarts(tmp_path: Path) -> None:
    with _server(tmp_path, "--appendonly", "yes") as (_, port):
        client = _client(port, password=PASSWORD)
        client.set("kept", "yes")
        client.close()
    assert (tmp_path / "appendonlydir").is_dir()
    with _server(tmp_path, "--appendonly", "yes") as (_, port):
        client = _client(port, password=PASSWORD)
        assert client.get("kept") == b"yes"
        client.close()


def _run_persistent_server_once(data_dir: Path) -> tuple[str, ...]:
    """Run a server with an append-only file and an ACL file in ``data_dir``, give it an agent's
    user (saved) and an inbox entry, stop it; the options that start it so again."""
    persistent = ("--appendonly", "yes", "--acl-file", str(data_dir / "users.acl"))
    with _server(data_dir, *persistent) as (_, port):
        admin = _client(port, password=PASSWORD)
        assert admin.acl_setuser(
            "mas-agent.ns.a", enabled=True, passwords=["+agent-secret"], commands=["+ping"]
        )
        assert save_acl_users(admin)
        admin.xadd("mas:{ns/a}:inbox", {"m": "accepted"})
        admin.close()
    return persistent


def test_acl_users_and_data_survive_a_restart_with_an_acl_file(tmp_path: Path) -> None:
    persistent = _run_persistent_server_once(tmp_path)
    with _server(tmp_path, *persistent) as (_, port):
        agent = _client(port, username="mas-agent.ns.a", password="agent-secret")
        assert agent.ping()
        agent.close()
        admin = _client(port, password=PASSWORD)
        assert admin.xlen("mas:{ns/a}:inbox") == 1
        admin.close()


def test_with_an_acl_file_the_administrator_password_is_the_one_given_at_start(
    tmp_path: Path,
) -> None:
    acl_file = tmp_path / "users.acl"
    # A file without a default user would make the server passwordless: it is never used so.
    acl_file.write_text("user someone on >x ~* +ping\n")
    with _server(tmp_path, "--acl-file", str(acl_file)) as (_, port):
        with pytest.raises(redis.AuthenticationError):
            _client(port).ping()
        admin = _client(port, password=PASSWORD)
        assert save_acl_users(admin)
        admin.close()
    with _server(tmp_path, "--acl-file", str(acl_file), password="rotated") as (_, port):
        for stale in (PASSWORD, ""):
            with pytest.raises(redis.AuthenticationError):
                _client(port, password=stale).ping()
        with _client(port, password="rotated") as admin:
            assert admin.ping()
        with _client(port, username="someone", password="x") as kept:
            assert kept.ping()
    assert PASSWORD.encode() not in acl_file.read_bytes()
    assert b"rotated" not in acl_file.read_bytes()


def test_the_server_files_are_for_its_user_only(tmp_path: Path) -> None:
    _run_persistent_server_once(tmp_path)
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert tmp_path / "users.acl" in written
    assert any(path.parent.name == "appendonlydir" for path in written)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "appendonlydir").stat().st_mode) == 0o700


def test_without_an_acl_file_users_live_in_memory_and_saving_says_so(tmp_path: Path) -> None:
    with _server(tmp_path) as (_, port), _client(port, password=PASSWORD) as admin:
        assert save_acl_users(admin) is False


def test_acl_file_text_replaces_only_the_default_user() -> None:
    saved = (
        "user default on nopass sanitize-payload ~* &* +@all\n"
        "user mas-agent.ns.a on #abc ~mas:{ns/a}:* resetchannels -@all +xadd\n"
        "\n"
    )
    text = acl_file_text(saved, "pw")
    lines = text.splitlines()
    assert lines[0] == (
        "user default on #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4"
        " ~* &* +@all"
    )
    assert lines[1:] == ["user mas-agent.ns.a on #abc ~mas:{ns/a}:* resetchannels -@all +xadd"]
    assert acl_file_text(text, "pw") == text
    assert acl_file_text("", "pw") == lines[0] + "\n"


@pytest.mark.parametrize("password", [None, ""])
def test_server_refuses_to_start_without_a_password(tmp_path: Path, password: str | None) -> None:
    process = _start(tmp_path, free_port(), password=password)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert b"MAS_REDIS_PASSWORD" in err


def test_server_config_quotes_every_value() -> None:
    text = server_config(
        ServerSettings(
            port=6379,
            bind="0.0.0.0",
            data_dir=Path("/da ta"),
            append_only=True,
            password='a"b\\c\n',
        )
    )
    assert 'requirepass "a\\"b\\\\c\\x0a"' in text
    assert 'dir "/da ta"' in text
    assert "appendonly yes" in text
    assert "appendfsync everysec" in text
    assert "aclfile" not in text


def test_server_config_with_an_acl_file_leaves_the_password_to_the_file() -> None:
    settings = ServerSettings(
        port=6379,
        bind="127.0.0.1",
        data_dir=Path("/data"),
        append_only=True,
        password="secret",
        acl_file=Path("/data/users.acl"),
        appendfsync="always",
    )
    text = server_config(settings)
    assert 'aclfile "/data/users.acl"' in text
    assert "appendfsync always" in text
    assert "secret" not in text and "requirepass" not in text
    with pytest.raises(ValueError, match="appendfsync"):
        server_config(ServerSettings(**{**settings.__dict__, "appendfsync": "sometimes"}))


def test_the_embedded_server_of_mas_up_refuses_strangers_and_shows_its_password_nowhere(
    tmp_path: Path,
) -> None:
    with RedisServer(data_dir=tmp_path) as server:
        assert server.process is not None
        proc = Path(f"/proc/{server.process.pid}")
        secret = server.password.encode()
        assert secret not in (proc / "cmdline").read_bytes()
        assert secret not in (proc / "environ").read_bytes()
        for path in tmp_path.rglob("*"):
            assert not path.is_file() or secret not in path.read_bytes(), path
        with pytest.raises(redis.AuthenticationError):
            _client(server.port).ping()
        with pytest.raises(redis.AuthenticationError):
            _client(server.port, username="default", password="guessed").ping()
        admin = redis.Redis.from_url(server.url)
        assert admin.ping()
        admin.close()
