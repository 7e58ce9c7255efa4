"""Child processes of local mode: a sidecar, or an agent program, started and stopped by PID.

``mas up`` starts one :class:`SidecarProcess` and one agent :class:`ChildProcess` per replica;
the test fixtures start the same classes, so tests exercise what users run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from mas.local.redis_server import free_port


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
    ) -> None:
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log_path = log_path
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
        )

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
    carry the agent's ACL password, goes in the environment: command lines are public)."""
    return [
        sys.executable, "-m", "mas_sidecar", "--agent-id", agent_id, "--port", str(port)
    ]  # fmt: skip


class SidecarProcess(ChildProcess):
    """A sidecar for ``agent_id`` on a loopback port; :meth:`start` waits for ``/readyz``."""

    def __init__(
        self,
        agent_id: str,
        redis_url: str,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.port = port or free_port()
        super().__init__(
            sidecar_args(agent_id, self.port),
            env={**(env or {}), "MAS_REDIS_URL": redis_url},
            log_path=log_path,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        super().start()
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
