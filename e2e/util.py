"""Small helpers shared by the e2e harness modules: running commands with readable failures,
the cache directory, progress lines with elapsed time, and polling with a deadline.

Used by ``e2e/kubebuild.py``, ``e2e/dockerd.py``, ``e2e/image.py`` and ``e2e/cluster.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_T0 = time.monotonic()


class HarnessError(RuntimeError):
    """A harness step failed; the message names the step, the command and its output tail."""


def cache_dir() -> Path:
    """``$MAS_E2E_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/mas-e2e``, created on demand."""
    explicit = os.environ.get("MAS_E2E_CACHE")
    if explicit:
        path = Path(explicit)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "mas-e2e"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def log(message: str) -> None:
    """Print one progress line with the time since the harness was imported."""
    print(f"[mas-e2e {time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def tail(text: str | bytes | None, lines: int = 25) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def file_tail(path: Path, lines: int = 25) -> str:
    try:
        return tail(path.read_bytes(), lines)
    except OSError:
        return f"(no {path})"


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    what: str = "",
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: bytes | None = None,
    timeout: float | None = None,
    log_file: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd``; on failure raise HarnessError with the command and its stderr/stdout tail.

    With ``log_file`` the output goes to that file (appended) and its tail is shown on failure.
    """
    argv = [str(c) for c in cmd]
    full_env = {**os.environ, **env} if env is not None else None
    try:
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            with log_file.open("ab") as out:
                proc = subprocess.run(
                    argv, env=full_env, cwd=cwd, input=input, timeout=timeout,
                    stdout=out, stderr=subprocess.STDOUT, check=False,
                )  # fmt: skip
        else:
            proc = subprocess.run(
                argv, env=full_env, cwd=cwd, input=input, timeout=timeout,
                capture_output=True, check=False,
            )  # fmt: skip
    except FileNotFoundError as exc:
        raise HarnessError(f"{what or 'command'} failed: {argv[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(
            f"{what or 'command'} timed out after {timeout}s: {' '.join(argv)}\n"
            f"{tail(exc.stderr) or tail(exc.stdout)}"
        ) from exc
    if check and proc.returncode != 0:
        if log_file:
            output = file_tail(log_file)
        else:
            output = "\n".join(filter(None, [tail(proc.stdout, 15), tail(proc.stderr)]))
        raise HarnessError(
            f"{what or 'command'} failed (exit {proc.returncode}): {' '.join(argv)}\n{output}"
        )
    return proc


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.3,
    on_timeout: Callable[[], str] | None = None,
) -> float:
    """Poll ``condition`` until true; return the seconds it took or raise HarnessError."""
    start = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - start
        except Exception:  # a component that is still starting may refuse or error
            pass
        if time.monotonic() - start > timeout:
            detail = on_timeout() if on_timeout else ""
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval)


def apt_install(packages: Sequence[str], commands: Mapping[str, str] | None = None) -> None:
    """apt-get install the Debian ``packages`` whose marker command (``commands``) or dpkg
    status says they are missing. Needs root and Debian; raises a clear error otherwise."""
    missing = []
    for pkg in packages:
        marker = (commands or {}).get(pkg)
        if marker is not None:
            if shutil.which(marker) is None:
                missing.append(pkg)
            continue
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
        )
        if "install ok installed" not in status.stdout:
            missing.append(pkg)
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise HarnessError(
            f"missing Debian packages {' '.join(missing)}: install them (as root, with apt-get)"
        )
    log(f"apt-get install {' '.join(missing)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    # A stale or partly unreachable package index is fine as long as the install works.
    run(["apt-get", "update", "-qq"], what="apt-get update", env=env, check=False)
    run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        what="apt-get install",
        env=env,
        timeout=1200,
    )
