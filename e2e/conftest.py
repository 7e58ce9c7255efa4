"""pytest fixtures for the e2e suite (``python -m pytest e2e``): a Kubernetes cluster with the
``mas`` image available on its node, and helpers to drive it.

- ``MAS_E2E_KUBECONFIG`` set: that cluster is used as it is (kind, or a local cluster started
  with ``python -m e2e.cluster up``); the image must already be built. With
  ``MAS_E2E_KIND_CLUSTER`` also set, the image is loaded with ``kind load docker-image`` first.
- Otherwise the local single-node Kubernetes 1.20 of ``e2e/cluster.py`` is brought up (the
  Kubernetes build, base image and wheelhouse are cached), the image is built into its Docker,
  and everything is torn down when the session ends (``MAS_E2E_KEEP=1`` leaves it running).

``MAS_E2E_HOST_NETWORK=1`` says an external cluster has no pod network (every pod on the host
network, as on the local cluster, which is recognised by its kubeconfig path).

The chart's embedded Redis claims a PersistentVolume. Where the cluster has a default
StorageClass (kind has one) the claim uses it; the local cluster has no provisioner, so the
``volumes`` fixture makes a hostPath PersistentVolume on this machine for each claim a test
names, in a StorageClass of its own, and removes them at the end of the session.

Other settings: ``MAS_E2E_IMAGE`` (default ``mas:0.1.0``), ``MAS_E2E_KUBECTL`` (kubectl binary
for an external cluster; default ``kubectl`` on PATH), ``MAS_E2E_CACHE`` (cache directory).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.kube import E2ECluster, HostVolumes
from e2e.util import HarnessError, tail

E2E_IMAGE = os.environ.get("MAS_E2E_IMAGE", "mas:0.1.0")
# Per-test limit that leaves the session fixture (which may build Kubernetes) out of it.
TEST_TIMEOUT_S = 600

_timings: dict[str, float] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S, func_only=True))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _timings:
        terminalreporter.write_sep("-", "mas e2e cluster timings (s, MB)")
        terminalreporter.write_line(", ".join(f"{k}={v}" for k, v in _timings.items()))


def _external_cluster(kubeconfig: str) -> E2ECluster:
    kubectl = os.environ.get("MAS_E2E_KUBECTL") or shutil.which("kubectl")
    if not kubectl:
        raise HarnessError("MAS_E2E_KUBECONFIG is set but no kubectl found (MAS_E2E_KUBECTL)")
    # The local cluster started by hand (python -m e2e.cluster up) has no pod network either.
    from e2e.cluster import LocalCluster  # noqa: PLC0415 - cheap, but only this mode needs it

    local_run = LocalCluster().kubeconfig.resolve() == Path(kubeconfig).expanduser().resolve()
    host_network = local_run or os.environ.get("MAS_E2E_HOST_NETWORK") == "1"
    cluster = E2ECluster(Path(kubeconfig), kubectl, E2E_IMAGE, local=host_network)
    kind_cluster = os.environ.get("MAS_E2E_KIND_CLUSTER")
    if kind_cluster:
        start = time.monotonic()
        proc = subprocess.run(
            ["kind", "load", "docker-image", E2E_IMAGE, "--name", kind_cluster],
            capture_output=True, check=False, timeout=600,
        )  # fmt: skip
        if proc.returncode != 0:
            raise HarnessError(
                f"kind load docker-image {E2E_IMAGE} --name {kind_cluster} failed:\n"
                f"{tail(proc.stderr)}"
            )
        cluster.timings["kind_load_s"] = round(time.monotonic() - start, 1)
    return cluster


@pytest.fixture(scope="session")
def e2e_cluster() -> Iterator[E2ECluster]:
    """The cluster of this session (see the module docstring for how it is chosen)."""
    external = os.environ.get("MAS_E2E_KUBECONFIG")
    if external:
        cluster = _external_cluster(external)
        _timings.update(cluster.timings)
        yield cluster
        return

    from e2e.cluster import LocalCluster  # noqa: PLC0415 - only the local mode needs it

    local = LocalCluster()
    try:
        timings = local.up(build_image=True)
    except BaseException:
        local.down()
        raise
    _timings.update(timings.values)
    try:
        yield E2ECluster(
            local.kubeconfig, str(local.kubectl_path()), E2E_IMAGE, local=True,
            timings=dict(timings.values), docker_host=local.docker.host,
        )  # fmt: skip
    finally:
        if os.environ.get("MAS_E2E_KEEP") == "1":
            print(f"\nMAS_E2E_KEEP=1: cluster left running, KUBECONFIG={local.kubeconfig}")
        else:
            _timings["teardown_s"] = round(local.down(), 1)


@pytest.fixture(scope="session")
def kubeconfig(e2e_cluster: E2ECluster) -> str:
    """Path of the kubeconfig of the session's cluster."""
    return str(e2e_cluster.kubeconfig)


@pytest.fixture(scope="session")
def mas_image(e2e_cluster: E2ECluster) -> str:
    """The mas image reference, present on the node(s); pods must use imagePullPolicy Never."""
    return e2e_cluster.image


@pytest.fixture
def namespace(e2e_cluster: E2ECluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"e2e-{secrets.token_hex(4)}"
    e2e_cluster.kubectl("create", "namespace", name)
    wait_until_sa = time.monotonic() + 60
    while time.monotonic() < wait_until_sa:  # pods need the default service account
        if e2e_cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False):
            break
        time.sleep(0.3)
    yield name
    e2e_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def volumes(e2e_cluster: E2ECluster) -> Iterator[HostVolumes]:
    """Storage for PersistentVolumeClaims: ``volumes.storage_class`` is the class to ask for
    ("" where the cluster has a default one), and ``volumes.provide(namespace, claim)`` makes a
    volume for that claim where the cluster cannot provision one."""
    from e2e.cluster import LocalCluster  # noqa: PLC0415 - cheap, but only this fixture needs it

    local = LocalCluster()
    on_this_machine = local.kubeconfig.resolve() == e2e_cluster.kubeconfig.resolve()
    volumes = HostVolumes(e2e_cluster, local.run_dir / "volumes" if on_this_machine else None)
    yield volumes
    volumes.remove_all()
