"""An agent program run by ``mas up``, its output copied to the console line by line.

A :class:`~mas_cli.local.processes.ChildProcess` whose stdout and stderr go to a pipe; a thread
prefixes each line with ``<agent>[<replica>]`` (like ``docker compose``). Used by
:mod:`mas_cli.local.supervisor`.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from mas_cli.local.display import Console
from mas_cli.local.processes import ChildProcess
from mas_cli.local.users import RunAs


class AgentProcess(ChildProcess):
    """An agent program whose output lines are written to ``console`` under ``prefix``."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        console: Console,
        prefix: str,
        user: RunAs | None = None,
    ) -> None:
        super().__init__(args, env=env, cwd=cwd, user=user)
        self.console = console
        self.prefix = prefix
        self.started_at = 0.0
        self._pump: threading.Thread | None = None

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self.user_options(),
        )
        self._pump = threading.Thread(
            target=self._copy_output,
            args=(self.process.stdout,),
            name=f"output of {self.prefix}",
            daemon=True,
        )
        self._pump.start()

    def _copy_output(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in stream:
                self.console.output(self.prefix, raw.decode("utf-8", errors="replace").rstrip())

    def flush_output(self, timeout: float = 2.0) -> None:
        """Wait until the output written before the process exited has been shown."""
        if self._pump is not None:
            self._pump.join(timeout)
