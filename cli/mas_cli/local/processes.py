"""Child processes of local mode: a sidecar, or an agent program, started and stopped by PID.

``mas up`` starts one :class:`SidecarProcess` and one agent :class:`ChildProcess` per replica;
the test fixtures start the same classes, so tests exercise what users run.

A child inherits the environment of the process that starts it, except the settings that carry
or choose secrets (``NOT_INHERITED``): each child gets its own, explicitly. A sidecar gets its
Redis URL and its API token as files in its credentials directory (mode 0600, the directory
0700), named by ``MAS_REDIS_URL_FILE`` and ``MAS_SIDECAR_TOKEN_FILE``: never on its command line
(world-readable) or in its environment. A child can run as another user
(:mod:`mas_cli.local.users`), then with no supplementary groups and umask 077.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from mas.client import SidecarClient
from mas_cli.local.redis_server import free_port
from mas_cli.local.users import RunAs
from mas_cli.server_arguments import PASSWORD_ENV
from mas_core.envflags import FILE_SUFFIX
from mas_core.identity.credentials import (
    API_TOKEN_FILE,
    PRIVATE_MODE,
    REDIS_URL_FILE,
    private_directory,
    write_atomic,
)
from mas_core.sidecar_token import TOKEN_ENV, TOKEN_FILE_ENV, new_token

REDIS_URL_ENV = "MAS_REDIS_URL"
# Settings that hold a secret or say where one is: meant for one process, never inherited.
NOT_INHERITED = frozenset(
    {
        REDIS_URL_ENV,
        REDIS_URL_ENV + FILE_SUFFIX,
        PASSWORD_ENV,
        TOKEN_ENV,
        TOKEN_FILE_ENV,
        "MAS_SIDECAR_INSECURE_NO_TOKEN",
    }
)


class ProcessStartError(RuntimeError):
    """A child process exited or did not become ready in time."""


class ChildProcess:
    """One child process in its own session, its output appended to ``log_path`` (or inherited)."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        user: RunAs | None = None,
    ) -> None:
        """``env`` is added to what is inherited; ``user``: run as that user instead."""
        inherited = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        self.args = list(args)
        self.env = {**inherited, **(env or {})}
        self.cwd = cwd
        self.log_path = log_path
        self.user = user
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def returncode(self) -> int | None:
        """None while running (or never started), else the exit status."""
        return self.process.poll() if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
            start_new_session=True,
            **self.user_options(),
        )

    def user_options(self) -> dict[str, Any]:
        """The :class:`subprocess.Popen` arguments that run the child as :attr:`user`."""
        if self.user is None:
            return {}
        return {
            "user": self.user.uid,
            "group": self.user.gid,
            "extra_groups": [],
            "umask": 0o077,
        }

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def sidecar_args(agent_id: str, port: int) -> list[str]:
    """The command line that starts a sidecar with this interpreter (the Redis URL, which may
    carry the agent's ACL password, goes in a file: command lines are public)."""
    return [
        sys.executable, "-m", "mas_sidecar", "--agent-id", agent_id, "--port", str(port)
    ]  # fmt: skip


class SidecarProcess(ChildProcess):
    """A sidecar for ``agent_id`` on a loopback port; :meth:`start` waits for ``/readyz``.

    Its agent must present :attr:`token` (new unless given). The Redis URL and the token are
    written into ``credentials_dir`` (a private temporary directory unless given; ``mas up``
    gives each agent's credentials directory) when the sidecar starts, for ``user`` if given.
    """

    def __init__(
        self,
        agent_id: str,
        redis_url: str,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        token: str | None = None,
        credentials_dir: Path | None = None,
        user: RunAs | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.port = port or free_port()
        self.token = token or new_token()
        self._redis_url = redis_url
        self._own_dir: tempfile.TemporaryDirectory[str] | None = None
        if credentials_dir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="mas-sidecar-")
            credentials_dir = Path(self._own_dir.name)
        self.credentials_dir = credentials_dir
        files = {
            REDIS_URL_ENV + FILE_SUFFIX: str(credentials_dir / REDIS_URL_FILE),
            TOKEN_FILE_ENV: str(credentials_dir / API_TOKEN_FILE),
        }
        super().__init__(
            sidecar_args(agent_id, self.port),
            env={**(env or {}), **files},
            log_path=log_path,
            user=user,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, *, coalesce: bool = True) -> SidecarClient:
        """A client of this sidecar, with its agent's token (as its agent has one)."""
        return SidecarClient(self.url, token=self.token, coalesce=coalesce)

    def start(self, timeout: float = 15.0, *, wait: bool = True) -> None:
        """Write the secrets, start the process and (unless not ``wait``) wait until ready."""
        owner = self.user.owner if self.user is not None else None
        private_directory(self.credentials_dir, owner)
        secrets = {REDIS_URL_FILE: self._redis_url, API_TOKEN_FILE: self.token}
        for name, value in secrets.items():
            write_atomic(self.credentials_dir / name, value.encode() + b"\n", PRIVATE_MODE, owner)
        super().start()
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Block until ``/readyz`` answers 200; raise if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise ProcessStartError(
                    f"sidecar for {self.agent_id} exited with status {self.returncode}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise ProcessStartError(f"sidecar for {self.agent_id} not ready after {timeout}s")
