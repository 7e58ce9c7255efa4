"""The original framework, mas-framework 0.3.4 from PyPI, on the natural path in the same run.

:func:`interpreter` finds a Python ≥ 3.13 (what the framework requires) with
``mas-framework==0.3.4`` installed: the one given (``--framework-python``), else one of
``python3.13`` / ``python3.14`` on ``PATH`` or under pyenv, into a virtual environment of its own
in the user's cache directory (``pip install mas-framework==0.3.4`` the first time). None, with
the reason, when there is no such interpreter or the install fails (offline): the benchmark then
skips the framework's rows and says why.

:func:`run` starts its gateway (with its registry service) in a process of its own, a receiving
and a sending agent in two more (:mod:`bench.framework_agents`), all against the benchmark's
server, and returns the sender's measurements. Used by :mod:`bench.cli`.
"""

from __future__ import annotations

import glob
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench.workload import RESULT_MARK

VERSION = "0.3.4"
_PROGRAM = Path(__file__).with_name("framework_agents.py")
_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mas-bench"
_TIMEOUT = 600.0


def _has_framework(python: str) -> bool:
    probe = "import importlib.metadata as m; print(m.version('mas-framework'))"
    try:
        found = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError:
        return False
    return found.returncode == 0 and found.stdout.strip() == VERSION


def _candidates() -> list[str]:
    found = [shutil.which(name) for name in ("python3.13", "python3.14")]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found += sorted(glob.glob(str(pyenv / "versions" / "3.1[3-9]*" / "bin" / "python")))
    usable = []
    for python in found:
        if python is None:
            continue
        check = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info >= (3, 13))"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if check.stdout.strip() == "True":
            usable.append(python)
    return usable


def interpreter(given: str | None) -> tuple[str | None, str]:
    """An interpreter with the framework installed, or None; and what was done or why not."""
    if given:
        if _has_framework(given):
            return given, f"mas-framework {VERSION} under {given}"
        return None, f"{given} has no mas-framework {VERSION} installed"
    venv_python = _CACHE / f"mas-framework-{VERSION}" / "bin" / "python"
    if venv_python.exists() and _has_framework(str(venv_python)):
        return str(venv_python), f"mas-framework {VERSION} (cached virtual environment)"
    bases = _candidates()
    if not bases:
        return None, "no Python 3.13 or later found (mas-framework needs it)"
    venv = venv_python.parent.parent
    made = subprocess.run(
        [bases[0], "-m", "venv", str(venv)], capture_output=True, text=True, check=False
    )
    if made.returncode == 0:
        made = subprocess.run(
            [str(venv_python), "-m", "pip", "install", "-q", f"mas-framework=={VERSION}"],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    if made.returncode != 0 or not _has_framework(str(venv_python)):
        reason = (made.stderr or made.stdout).strip().splitlines()[-1:] or ["unknown"]
        return None, f"could not install mas-framework {VERSION} (offline?): {reason[0]}"
    return str(venv_python), f"mas-framework {VERSION} installed under {bases[0]}"


class _Child:
    """One process of the framework's run, its output read line by line."""

    def __init__(self, python: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.process = subprocess.Popen(
            [python, str(_PROGRAM), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=env, cwd=_PROGRAM.parent,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, mark: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
            if mark in line:
                return line
        tail = "\n".join(self.seen[-30:])
        raise RuntimeError(f"the framework's {mark!r} did not come; its output:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run(python: str, redis_url: str, messages: int, requests: int) -> dict[str, Any]:
    """The framework's natural path against ``redis_url``: the sender's result."""
    children: list[_Child] = []
    try:
        gateway = _Child(python, "gateway", redis_url)
        children.append(gateway)
        gateway.wait_for("READY", 60)
        sink = _Child(python, "sink", redis_url)
        children.append(sink)
        sink.wait_for("READY", 60)
        sender = _Child(python, "sender", redis_url, str(messages), str(requests))
        children.append(sender)
        line = sender.wait_for(RESULT_MARK, _TIMEOUT)
        result: dict[str, Any] = orjson.loads(line.split(RESULT_MARK, 1)[1])
        return result
    finally:
        for child in reversed(children):
            child.stop()
