"""A Docker daemon of the harness's own: its own socket, data root (in the cache, so images
survive between runs) and exec root, with no bridge network and no iptables rules, so that no
container can get an address off loopback; builds and pods use the host network.

Used by ``e2e/image.py`` (image builds) and ``e2e/cluster.py`` (the kubelet's dockershim).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from e2e.util import HarnessError, apt_install, file_tail, log, run, wait_until


def docker_client() -> str:
    """The docker CLI shipped beside dockerd (same version), else the one on PATH."""
    dockerd = shutil.which("dockerd")
    if dockerd:
        sibling = Path(dockerd).resolve().parent.parent / "bin" / "docker"
        if sibling.exists():
            return str(sibling)
    client = shutil.which("docker")
    if client is None:
        raise HarnessError("no docker CLI found (Debian package docker.io)")
    return client


class DockerDaemon:
    """One dockerd whose state lives in ``run_dir`` and whose images live in ``data_root``."""

    def __init__(self, run_dir: Path, data_root: Path) -> None:
        self.run_dir = run_dir
        self.data_root = data_root
        self.exec_root = run_dir / "docker-exec"
        self.socket = run_dir / "docker.sock"
        self.pid_file = run_dir / "dockerd.pid"
        self.log_file = run_dir / "dockerd.log"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host}

    def docker(
        self,
        *args: str,
        what: str = "",
        input: bytes | None = None,
        timeout: float = 600,
        log_file: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        return run(
            [docker_client(), "--host", self.host, *args],
            what=what or f"docker {args[0]}",
            input=input,
            timeout=timeout,
            env={"DOCKER_BUILDKIT": "0"},
            log_file=log_file,
        )

    def responding(self) -> bool:
        if not self.socket.exists():
            return False
        proc = subprocess.run(
            [docker_client(), "--host", self.host, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            check=False,
            timeout=20,
        )
        return proc.returncode == 0

    def image_exists(self, ref: str) -> bool:
        proc = subprocess.run(
            [docker_client(), "--host", self.host, "image", "inspect", ref],
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    def start(self) -> None:
        apt_install(["docker.io"], {"docker.io": "dockerd"})
        if self.responding():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        if len(str(self.exec_root)) > 60:
            raise HarnessError(
                f"{self.exec_root} is too long for containerd's unix sockets; "
                "set MAS_E2E_CACHE to a shorter directory"
            )
        self.socket.unlink(missing_ok=True)
        cmd = [
            shutil.which("dockerd") or "dockerd",
            "--host", self.host,
            "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root),
            "--pidfile", str(self.pid_file),
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--exec-opt", "native.cgroupdriver=cgroupfs",
        ]  # fmt: skip
        with self.log_file.open("ab") as out:
            subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        took = wait_until(
            self.responding,
            timeout=60,
            what="dockerd to answer",
            interval=0.3,
            on_timeout=lambda: f"{' '.join(cmd)}\n{file_tail(self.log_file)}",
        )
        log(f"dockerd up in {took:.1f}s ({self.host})")

    def stop(self) -> None:
        """Remove every container, stop dockerd by its PID, unmount what it left."""
        if self.responding():
            ids = subprocess.run(
                [docker_client(), "--host", self.host, "ps", "-aq"],
                capture_output=True, text=True, check=False,
            ).stdout.split()  # fmt: skip
            if ids:
                subprocess.run(
                    [docker_client(), "--host", self.host, "rm", "-f", "-v", *ids],
                    capture_output=True, check=False, timeout=120,
                )  # fmt: skip
        pid = read_pid(self.pid_file)
        if pid is not None:
            stop_pid(pid, "dockerd", grace=30)
        self.pid_file.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)
        for root in (self.exec_root, self.data_root):
            unmount_under(root)
        shutil.rmtree(self.exec_root, ignore_errors=True)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def stop_pid(pid: int, name: str, grace: float = 15) -> None:
    """SIGTERM then SIGKILL one process, only if its command name still is ``name``
    (a PID file left by a crashed run may by now name an unrelated process)."""
    if not _alive(pid) or not name.startswith(_command_name(pid)[:15]):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        log(f"{name} (pid {pid}) ignored SIGTERM for {grace:.0f}s; killing it")
        os.kill(pid, signal.SIGKILL)
        while _alive(pid) and time.monotonic() < deadline + 10:
            time.sleep(0.1)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first."""
    prefix = str(root.resolve()) if root.exists() else str(root)
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_under(root: Path) -> None:
    """Unmount everything at or below ``root`` (a lazy unmount when a plain one is refused)."""
    for _ in range(3):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    left = mounts_under(root)
    if left:
        raise HarnessError(f"could not unmount under {root}: {left[:5]}")
