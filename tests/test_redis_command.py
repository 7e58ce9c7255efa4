"""``mas redis-server``: the embedded Valkey the Helm chart runs, started for real on loopback.

Each test runs ``python -m mas redis-server`` as a child process on a free loopback port with a
password in ``MAS_REDIS_PASSWORD`` and talks to it with redis-py.
"""

from __future__ import annotations

import contextlib
import os
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

from mas.local.redis_server import RedisServer, ServerSettings, free_port, server_config

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
    command = [sys.executable, "-m", "mas", "redis-server", "--port", str(port)]
    command += ["--bind", "127.0.0.1", "--dir", str(data_dir), "--loglevel", "warning", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> None:
    """Until the server serves commands: it accepts connections before it has loaded its data
    (answering ``LOADING``), so a restarted server is ready only once ``INFO`` says loaded."""
    deadline = time.monotonic() + GUARD_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else b""
        with contextlib.suppress(redis.ConnectionError), _client(port, password=PASSWORD) as client:
            if client.info("persistence")["loading"] == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"no server on port {port}")


@contextlib.contextmanager
def _server(data_dir: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    process = _start(data_dir, port, *extra)
    try:
        _wait_ready(process, port)
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
