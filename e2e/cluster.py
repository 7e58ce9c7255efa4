"""A real single-node Kubernetes v1.20.2 on this machine's loopback, for the e2e tests.

    python -m e2e.cluster up [--no-image]   # build/reuse everything, start the cluster
    python -m e2e.cluster image             # (re)build the mas:0.1.0 image only
    python -m e2e.cluster status            # what runs, and the kubeconfig path
    python -m e2e.cluster down              # stop everything, unmount, remove the run state

Called by ``e2e/conftest.py`` (the session fixture) or by hand. Pieces: Kubernetes built from
Debian's source package (``e2e/kubebuild.py``, cached), a private dockerd (``e2e/dockerd.py``),
the mas image (``e2e/image.py``), then etcd, kube-apiserver on 127.0.0.1:443 with the service
range 127.0.0.0/24 (so the ``kubernetes`` Service is 127.0.0.1, reachable in-cluster without
kube-proxy), kube-controller-manager, kube-scheduler and the kubelet (dockershim) with node IP
127.0.0.1. There is no CNI, no kube-proxy and no DNS: pods must use ``hostNetwork: true`` (a pod
without it cannot start: dockerd has no bridge), so all traffic stays on loopback.

Everything runs as root. The run state (certificates, etcd data, kubelet root, logs, PID files,
kubeconfig) is in ``<cache>/run``; ``up`` first cleans up what a crashed run left there.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from e2e import image, kubebuild
from e2e.dockerd import DockerDaemon, read_pid, stop_pid, unmount_under
from e2e.util import HarnessError, apt_install, cache_dir, file_tail, log, run, wait_until

NODE_NAME = "mas-e2e"
APISERVER_PORT = 443  # the `kubernetes` Service's port: in-cluster clients dial 127.0.0.1:443
ETCD_CLIENT_PORT = 12379
ETCD_PEER_PORT = 12380
# Started in this order, stopped in the reverse order (the kubelet first).
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
LOOPBACK_PORTS = {
    APISERVER_PORT: "kube-apiserver",
    ETCD_CLIENT_PORT: "etcd",
    ETCD_PEER_PORT: "etcd (peer)",
    10250: "kubelet",
    10248: "kubelet (healthz)",
    10257: "kube-controller-manager",
    10259: "kube-scheduler",
}
POD_LOG_DIRS = (Path("/var/log/pods"), Path("/var/log/containers"))

KUBELET_CONFIG = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%",
               nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: /etc/resolv.conf
"""


@dataclass
class Timings:
    """Seconds spent per phase of ``up`` (and the image size), for reports."""

    values: dict[str, float] = field(default_factory=dict)

    def __setitem__(self, key: str, value: float) -> None:
        self.values[key] = round(value, 1)

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


class LocalCluster:
    """The from-source single-node cluster; state in ``<cache>/run``, images in
    ``<cache>/docker``."""

    def __init__(self, cache: Path | None = None) -> None:
        self.cache = cache or cache_dir()
        self.run_dir = self.cache / "run"
        self.kubeconfig = self.run_dir / "kubeconfig"
        self.docker = DockerDaemon(self.run_dir, self.cache / "docker")

    # ---- helpers -------------------------------------------------------------------------

    def kubectl_path(self) -> Path:
        return kubebuild.bin_dir() / "kubectl"

    def kubectl(self, *args: str, input: bytes | None = None, timeout: float = 60) -> str:
        proc = run(
            [self.kubectl_path(), f"--kubeconfig={self.kubeconfig}", *args],
            what=f"kubectl {' '.join(args[:2])}",
            input=input,
            timeout=timeout,
        )
        return proc.stdout.decode()

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _log_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def _start(self, name: str, cmd: list[str]) -> None:
        with self._log_file(name).open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self._pid_file(name).write_text(str(proc.pid))
        time.sleep(0.2)
        if proc.poll() is not None:
            raise HarnessError(
                f"{name} exited at once ({proc.returncode}): {' '.join(cmd)}\n"
                f"{file_tail(self._log_file(name))}"
            )

    def _check_running(self, name: str) -> str:
        pid = read_pid(self._pid_file(name))
        if pid is None or not Path(f"/proc/{pid}").exists():
            return f"{name} is not running; last log lines:\n{file_tail(self._log_file(name))}"
        return f"{name} runs (pid {pid}); last log lines:\n{file_tail(self._log_file(name), 10)}"

    def is_up(self) -> bool:
        if not self.kubeconfig.exists():
            return False
        proc = subprocess.run(
            [str(self.kubectl_path()), f"--kubeconfig={self.kubeconfig}", "get", "--raw=/readyz"],
            capture_output=True, check=False, timeout=20,
        )  # fmt: skip
        return proc.returncode == 0 and proc.stdout.strip() == b"ok"

    # ---- up ------------------------------------------------------------------------------

    def up(self, build_image: bool = True) -> Timings:
        """Bring the cluster up from whatever state (a leftover run is torn down first)."""
        if os.geteuid() != 0:
            raise HarnessError("the local cluster needs root (dockerd, kubelet, mounts)")
        t = Timings()
        start = time.monotonic()
        if self.run_dir.exists():
            log("cleaning up a previous run")
            self.down()
        self._check_ports_free()

        phase = time.monotonic()
        bins = kubebuild.ensure_built()
        t["kubernetes_build_s"] = time.monotonic() - phase
        apt_install(["etcd-server"], {"etcd-server": "etcd"})

        self.run_dir.mkdir(parents=True)
        before = {str(d): sorted(os.listdir(d)) if d.is_dir() else None for d in POD_LOG_DIRS}
        (self.run_dir / "pod-logs-before.json").write_text(json.dumps(before))
        phase = time.monotonic()
        self.docker.start()
        t["dockerd_s"] = time.monotonic() - phase
        pause = image.ensure_pause_image(self.docker, bins / "pause")
        if build_image:
            phase = time.monotonic()
            for key, value in image.build_mas_image(self.docker).items():
                t[key] = value
            t["image_total_s"] = time.monotonic() - phase

        phase = time.monotonic()
        self._start_control_plane(bins)
        self._start_kubelet(bins, pause)
        t["cluster_up_s"] = time.monotonic() - phase
        t["total_s"] = time.monotonic() - start
        log(f"cluster up: {t}")
        log(f"KUBECONFIG={self.kubeconfig}")
        return t

    def _check_ports_free(self) -> None:
        busy = []
        for port, owner in LOOPBACK_PORTS.items():
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    busy.append(f"127.0.0.1:{port} ({owner})")
        if busy:
            raise HarnessError(
                "ports the local cluster needs are in use by processes it did not start: "
                + ", ".join(busy)
            )

    def _write_credentials(self) -> str:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.run_dir / "sa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        (self.run_dir / "sa.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        token = secrets.token_hex(16)
        tokens = self.run_dir / "tokens.csv"
        tokens.write_text(f"{token},admin,admin,system:masters\n")
        tokens.chmod(0o600)
        return token

    def _write_kubeconfig(self, token: str, ca_file: Path) -> None:
        ca = base64.b64encode(ca_file.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": NODE_NAME,
                    "cluster": {
                        "server": f"https://127.0.0.1:{APISERVER_PORT}",
                        "certificate-authority-data": ca,
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": NODE_NAME, "context": {"cluster": NODE_NAME, "user": "admin"}}],
            "current-context": NODE_NAME,
        }
        self.kubeconfig.write_text(json.dumps(config, indent=1))
        self.kubeconfig.chmod(0o600)

    def _start_control_plane(self, bins: Path) -> None:
        w = self.run_dir
        token = self._write_credentials()
        etcd = shutil.which("etcd") or "etcd"
        self._start(
            "etcd",
            [
                etcd, "--name", NODE_NAME, "--data-dir", str(w / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{ETCD_CLIENT_PORT}",
                "--advertise-client-urls", f"http://127.0.0.1:{ETCD_CLIENT_PORT}",
                "--listen-peer-urls", f"http://127.0.0.1:{ETCD_PEER_PORT}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{ETCD_PEER_PORT}",
                "--initial-cluster", f"{NODE_NAME}=http://127.0.0.1:{ETCD_PEER_PORT}",
                "--listen-metrics-urls", "",
            ],
        )  # fmt: skip
        certs = w / "certs"
        self._start(
            "kube-apiserver",
            [
                str(bins / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={APISERVER_PORT}",
                "--insecure-port=0",
                f"--cert-dir={certs}",
                f"--token-auth-file={w / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={w / 'sa.pub'}",
                f"--service-account-signing-key-file={w / 'sa.key'}",
                "--service-cluster-ip-range=127.0.0.0/24",
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )
        ca_file = certs / "apiserver.crt"
        took = wait_until(
            ca_file.exists, timeout=30, what="the apiserver's certificate",
            on_timeout=lambda: self._check_running("kube-apiserver"),
        )  # fmt: skip
        self._write_kubeconfig(token, ca_file)
        took += wait_until(
            self.is_up, timeout=90, what="kube-apiserver /readyz", interval=0.2,
            on_timeout=lambda: self._check_running("etcd") + "\n"
            + self._check_running("kube-apiserver"),
        )  # fmt: skip
        log(f"kube-apiserver ready in {took:.1f}s")
        kc = str(self.kubeconfig)
        auth = [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}"]
        auth.append(f"--authorization-kubeconfig={kc}")
        self._start(
            "kube-controller-manager",
            [
                str(bins / "kube-controller-manager"), *auth,
                f"--service-account-private-key-file={w / 'sa.key'}",
                f"--root-ca-file={ca_file}",
                "--leader-elect=false", "--bind-address=127.0.0.1", "--port=0",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-route,-service",
            ],
        )  # fmt: skip
        self._start(
            "kube-scheduler",
            [
                str(bins / "kube-scheduler"), *auth,
                "--leader-elect=false", "--bind-address=127.0.0.1", "--port=0",
            ],
        )  # fmt: skip

    def _start_kubelet(self, bins: Path, pause_image: str) -> None:
        w = self.run_dir
        (w / "kubelet-config.yaml").write_text(KUBELET_CONFIG)
        (w / "kubelet").mkdir()
        (w / "volume-plugins").mkdir()
        self._start(
            "kubelet",
            [
                str(bins / "kubelet"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={w / 'kubelet-config.yaml'}",
                "--container-runtime=docker",
                f"--docker-endpoint={self.docker.host}",
                f"--pod-infra-container-image={pause_image}",
                f"--root-dir={w / 'kubelet'}",
                f"--volume-plugin-dir={w / 'volume-plugins'}",
                f"--hostname-override={NODE_NAME}",
                "--node-ip=127.0.0.1",
            ],
        )
        took = wait_until(
            self.node_ready, timeout=120, what=f"node {NODE_NAME} Ready", interval=0.5,
            on_timeout=lambda: self._check_running("kubelet"),
        )  # fmt: skip
        log(f"node {NODE_NAME} Ready after {took:.1f}s")
        wait_until(
            lambda: "token" in self.kubectl(
                "get", "serviceaccount", "default", "-o", "jsonpath={.secrets[0].name}"
            ),
            timeout=60, what="the default service account's token",
            on_timeout=lambda: self._check_running("kube-controller-manager"),
        )  # fmt: skip

    def node_ready(self) -> bool:
        status = self.kubectl(
            "get", "node", NODE_NAME,
            "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        )  # fmt: skip
        return status.strip() == "True"

    # ---- down ----------------------------------------------------------------------------

    def down(self) -> float:
        """Stop every process by PID, remove the containers, unmount everything under the run
        directory and remove it. Safe to call on a half-started or crashed run."""
        start = time.monotonic()
        stop_pid_of = {name: read_pid(self._pid_file(name)) for name in COMPONENTS}
        kubelet = stop_pid_of.pop("kubelet")
        if kubelet is not None:
            stop_pid(kubelet, "kubelet")
        self.docker.stop()
        for name in reversed(COMPONENTS[:-1]):
            pid = stop_pid_of[name]
            if pid is not None:
                stop_pid(pid, name)
        self._remove_pod_logs()
        unmount_under(self.run_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.run_dir.exists():
            raise HarnessError(f"could not remove {self.run_dir}")
        took = time.monotonic() - start
        log(f"cluster down in {took:.1f}s")
        return took

    def _remove_pod_logs(self) -> None:
        """Remove the pod log entries the kubelet created under /var/log during this run."""
        before_file = self.run_dir / "pod-logs-before.json"
        if not before_file.exists():
            return
        before = json.loads(before_file.read_text())
        for d in POD_LOG_DIRS:
            if not d.is_dir():
                continue
            existed = before.get(str(d))
            for name in set(os.listdir(d)) - set(existed or []):
                path = d / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            if existed is None:  # the kubelet made it during this run
                with contextlib.suppress(OSError):
                    d.rmdir()

    def status(self) -> str:
        lines = []
        for name in COMPONENTS:
            pid = read_pid(self._pid_file(name))
            alive = pid is not None and Path(f"/proc/{pid}").exists()
            lines.append(f"{name:24} {'running, pid ' + str(pid) if alive else 'stopped'}")
        docker = "running" if self.docker.responding() else "stopped"
        lines.append(f"{'dockerd':24} {docker} ({self.docker.host})")
        lines.append(f"{'apiserver':24} {'ready' if self.is_up() else 'not ready'}")
        lines.append(f"KUBECONFIG={self.kubeconfig}")
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.cluster", description="the local single-node Kubernetes for e2e"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local cluster (building what the cache lacks)")
    up.add_argument("--no-image", action="store_true", help="do not build the mas image")
    sub.add_parser("down", help="stop the local cluster and remove its run state")
    sub.add_parser("status", help="show what runs")
    sub.add_parser("image", help="build the mas image with the harness's dockerd")
    args = parser.parse_args(argv)
    cluster = LocalCluster()
    try:
        if args.command == "up":
            timings = cluster.up(build_image=not args.no_image)
            print(json.dumps(timings.values))
            print(f"export KUBECONFIG={cluster.kubeconfig} DOCKER_HOST={cluster.docker.host}")
        elif args.command == "down":
            cluster.down()
        elif args.command == "status":
            print(cluster.status())
        elif args.command == "image":
            was_running = cluster.docker.responding()
            cluster.run_dir.mkdir(parents=True, exist_ok=True)
            cluster.docker.start()
            try:
                print(json.dumps(image.build_mas_image(cluster.docker)))
            finally:
                if not was_running:
                    cluster.down()
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
