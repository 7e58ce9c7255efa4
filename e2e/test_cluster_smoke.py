"""Smoke test of the e2e harness: the node is Ready and a pod running the mas image starts,
as the image's non-root user with a read-only root filesystem on the host network, and can run
the CLI and import the packages. Run by ``python -m pytest e2e``."""

from __future__ import annotations

import json

from e2e.kube import E2ECluster

MARKER = "mas-e2e-smoke-ok"
# The CLI answers, the packages import, and nothing needs a writable root filesystem.
SCRIPT = (
    "import os, subprocess, mas, mas_sidecar; "
    "subprocess.run(['mas', '--help'], check=True, stdout=subprocess.DEVNULL); "
    f"print('{MARKER}', os.getuid())"
)


def test_node_ready(e2e_cluster: E2ECluster) -> None:
    nodes = json.loads(e2e_cluster.kubectl("get", "nodes", "-o", "json"))["items"]
    assert nodes, "the cluster has no node"
    for node in nodes:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["status"]["conditions"]


def test_mas_image_runs_in_a_pod(e2e_cluster: E2ECluster, mas_image: str, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "mas-smoke", "namespace": namespace},
        "spec": {
            "hostNetwork": True,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "mas",
                    "image": mas_image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", SCRIPT],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    e2e_cluster.apply(pod)
    e2e_cluster.wait_for_pod("mas-smoke", namespace, phases=("Succeeded",), timeout=120)
    logs = e2e_cluster.kubectl("logs", "-n", namespace, "mas-smoke")
    assert f"{MARKER} 65532" in logs, logs
