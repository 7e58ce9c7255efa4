"""``E2ECluster``: what an e2e test gets from the ``e2e_cluster`` fixture of ``e2e/conftest.py``
(kubeconfig, kubectl, the image name, and helpers to apply manifests and wait for pods), and
``HostVolumes``, the ``volumes`` fixture's PersistentVolumes for a cluster without a storage
provisioner. Imported by the conftest and by tests for type hints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.util import HarnessError, tail

Manifest = dict[str, Any] | Sequence[dict[str, Any]] | str | Path


@dataclass
class E2ECluster:
    """A cluster the tests may use: kubeconfig, kubectl and helpers.

    ``local`` is True for the from-source cluster: there every pod must set
    ``hostNetwork: true`` (there is no pod network), every pod shares the machine's loopback
    (so ports must not collide), and services such as Redis are reached at 127.0.0.1.
    ``docker_host`` is the socket of the Docker daemon that runs the node's containers, when the
    harness runs it (the local cluster): then a container can be killed as a crash would.
    """

    kubeconfig: Path
    kubectl_bin: str
    image: str
    local: bool
    timings: dict[str, float] = field(default_factory=dict)
    docker_host: str | None = None

    def kubectl(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> str:
        """Run kubectl against this cluster; return stdout, raise HarnessError on failure."""
        data = input.encode() if isinstance(input, str) else input
        argv = [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(argv, input=data, capture_output=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise HarnessError(
                f"kubectl failed (exit {proc.returncode}): {' '.join(argv[1:])}\n"
                f"{tail(proc.stderr) or tail(proc.stdout)}"
            )
        return proc.stdout.decode()

    def _manifest_text(self, manifest: Manifest) -> str:
        if isinstance(manifest, Path):
            return manifest.read_text()
        if isinstance(manifest, str):
            return manifest
        if isinstance(manifest, dict):
            return yaml.safe_dump(manifest)
        return yaml.safe_dump_all(list(manifest))

    def apply(self, manifest: Manifest, namespace: str | None = None) -> str:
        """``kubectl apply`` a dict, a list of dicts, YAML text or a file path."""
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=self._manifest_text(manifest))

    def delete(self, manifest: Manifest, namespace: str | None = None, wait: bool = True) -> str:
        ns = ["-n", namespace] if namespace else []
        return self.kubectl(
            "delete", *ns, "--ignore-not-found", f"--wait={str(wait).lower()}", "-f", "-",
            input=self._manifest_text(manifest),
        )  # fmt: skip

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns = ["-n", namespace] if namespace else []
        result: dict[str, Any] = json.loads(self.kubectl("get", kind, name, *ns, "-o", "json"))
        return result

    def describe(self, kind: str, name: str, namespace: str | None = None) -> str:
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("describe", kind, name, *ns, check=False)

    def wait_for_pod(
        self,
        name: str,
        namespace: str,
        phases: Sequence[str] = ("Succeeded",),
        timeout: float = 120,
    ) -> dict[str, Any]:
        """Wait until the pod reaches one of ``phases``; a pod that ends (or is stuck) in
        another phase raises with its description and logs."""
        deadline = time.monotonic() + timeout
        pod: dict[str, Any] = {}
        while time.monotonic() < deadline:
            pod = self.get("pod", name, namespace)
            phase = pod.get("status", {}).get("phase")
            if phase in phases:
                return pod
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(0.5)
        logs = self.kubectl("logs", "-n", namespace, name, "--all-containers", check=False)
        raise HarnessError(
            f"pod {namespace}/{name} is {pod.get('status', {}).get('phase')}, wanted "
            f"{'/'.join(phases)}\n{self.describe('pod', name, namespace)}\nlogs:\n{logs}"
        )

    def kill_container(self, pod: str, namespace: str, container: str) -> None:
        """SIGKILL ``container`` of ``pod`` through the node's Docker daemon: no SIGTERM, no
        shutdown of its own, as when the process crashes (the kubelet then restarts it)."""
        if self.docker_host is None:
            raise HarnessError("killing a container needs the harness's own Docker daemon")
        from e2e.dockerd import docker_client  # noqa: PLC0415 - only the local cluster has it

        statuses = self.get("pod", pod, namespace)["status"]["containerStatuses"]
        runtime_id = next(s["containerID"] for s in statuses if s["name"] == container)
        proc = subprocess.run(
            [docker_client(), "--host", self.docker_host, "kill", "--signal", "KILL",
             runtime_id.removeprefix("docker://")],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise HarnessError(f"docker kill of {namespace}/{pod}/{container}: {tail(proc.stderr)}")

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for this cluster."""
        from kubernetes import config  # noqa: PLC0415 - only tests that want it pay the import

        return config.new_client_from_config(config_file=str(self.kubeconfig))


HOST_STORAGE_CLASS = "mas-e2e-hostpath"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
# The uid and gid of the mas image, which the chart's Redis runs as: a hostPath volume is not
# given to the pod's fsGroup, so its directory belongs to them from the start.
IMAGE_UID = 65532


@dataclass
class HostVolumes:
    """PersistentVolumes for claims on a cluster whose node is this machine and that has no
    default StorageClass (the local cluster): each a directory under ``root``, pre-bound to
    its claim, in the StorageClass ``mas-e2e-hostpath`` (no provisioner, immediate binding).
    Where the cluster has a default StorageClass, :meth:`provide` does nothing."""

    cluster: E2ECluster
    root: Path | None
    made: list[str] = field(default_factory=list)

    @property
    def storage_class(self) -> str:
        """The class claims should name ("": the cluster's default)."""
        return "" if self._has_default_class() else HOST_STORAGE_CLASS

    def _has_default_class(self) -> bool:
        classes = json.loads(self.cluster.kubectl("get", "storageclasses", "-o", "json"))
        return any(
            (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
            for c in classes["items"]
        )

    def provide(self, namespace: str, claim: str, size: str = "1Gi") -> None:
        """A volume for the claim ``namespace/claim`` (made before it, or while it waits)."""
        if self._has_default_class():
            return
        if self.root is None:
            raise HarnessError(
                "the cluster has no default StorageClass and its node is not this machine: "
                "give it a provisioner (or a default class) for the chart's Redis claim"
            )
        name = f"mas-e2e-{namespace}-{claim}"[:253]
        directory = self.root / name
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True, mode=0o700)
        os.chown(directory, IMAGE_UID, IMAGE_UID)
        self.cluster.apply(
            [
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {"name": HOST_STORAGE_CLASS},
                    "provisioner": "kubernetes.io/no-provisioner",
                    "volumeBindingMode": "Immediate",
                    "reclaimPolicy": "Retain",
                },
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": name},
                    "spec": {
                        "capacity": {"storage": size},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": HOST_STORAGE_CLASS,
                        "claimRef": {"namespace": namespace, "name": claim},
                        "hostPath": {"path": str(directory), "type": "Directory"},
                    },
                },
            ]
        )
        self.made.append(name)

    def remove_all(self) -> None:
        """Delete the volumes made (their directories go with the cluster's run directory)."""
        if self.made:
            self.cluster.kubectl(
                "delete", "persistentvolume", *self.made, "--ignore-not-found", "--wait=false",
                check=False,
            )  # fmt: skip
        self.made.clear()
