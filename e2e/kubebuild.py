"""Build Kubernetes v1.20.2 (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
kubectl) and the pod-sandbox ``pause`` binary from Debian's own ``kubernetes`` source package,
cached under ``<cache>/kubernetes-v1.20.2-p<rev>/bin``; a cached build is reused in well under a
second.

Called by ``e2e/cluster.py`` (``up``) and runnable alone: ``python -m e2e.kubebuild``.

Why from source: no container registry (so no kind, no kubeadm images) and no upstream release
downloads are reachable where this runs; Debian bookworm ships the 1.20.2 source with its
``vendor/`` tree, which Debian's Go 1.19 compiles offline. Four patches make it run:

1. The vendored ``github.com/modern-go/reflect2`` crashes the apiserver under Go 1.19 (``fatal
   error: fault`` in ``UnsafeMapType.UnsafeIterate``); Debian's reflect2 1.0.2 replaces it.
2. Containers that lack ``CAP_SYS_RESOURCE`` may not set a negative ``oom_score_adj``, which the
   kubelet asks of runc for sandboxes and Guaranteed pods; those scores become 0.
3. The kubelet refuses a loopback ``--node-ip``; the harness's node is 127.0.0.1, so that the
   apiserver reaches the kubelet (logs, exec) and hostNetwork pods get a pod IP on loopback.
4. No registry means no ``pause`` image; ``build/pause/linux/pause.c`` is compiled statically here
   and imported into Docker by ``e2e/cluster.py``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import time
from pathlib import Path

from e2e.util import HarnessError, apt_install, cache_dir, log, run

K8S_VERSION = "1.20.2"
K8S_COMMIT = "faecb196815e248d3ecfb03c680a4507229c2a56"
# Bump when the patches or the list of binaries change: a new revision is a new cache entry.
PATCH_REV = 2
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl")
BUILD_PACKAGES = (
    "golang-go",
    "golang-github-modern-go-reflect2-dev",
    "build-essential",
    "rsync",
    "jq",
    "dpkg-dev",
)
REFLECT2 = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")


def bin_dir() -> Path:
    """Where the binaries of this revision live (may not exist yet)."""
    return cache_dir() / f"kubernetes-v{K8S_VERSION}-p{PATCH_REV}" / "bin"


def is_built() -> bool:
    d = bin_dir()
    return (d / ".complete").exists() and all((d / b).exists() for b in (*BINARIES, "pause"))


def ensure_built() -> Path:
    """Return the directory of the binaries, building them first if the cache has none."""
    if is_built():
        return bin_dir()
    lock_path = cache_dir() / "kubernetes-build.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same thing
        if not is_built():
            _build()
    return bin_dir()


def _debian_source_entries(target: Path) -> None:
    """Write deb-src entries made from the machine's own Debian apt sources into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    found = False
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        text = src.read_text()
        if "debian" not in text:
            continue
        stanzas = []
        for stanza in text.split("\n\n"):
            if "Types:" in stanza and "debian" in stanza:
                stanzas.append(stanza.replace("Types: deb\n", "Types: deb-src\n"))
        if stanzas:
            (target / f"mas-e2e-{src.stem}.sources").write_text("\n\n".join(stanzas) + "\n")
            found = True
    lines = []
    for src in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        if src.exists():
            for line in src.read_text().splitlines():
                if line.startswith("deb ") and "debian" in line:
                    lines.append("deb-src " + line[4:])
    if lines:
        (target / "mas-e2e.list").write_text("\n".join(lines) + "\n")
        found = True
    if not found:
        raise HarnessError("no Debian apt sources found to fetch the kubernetes source package")


def _build() -> None:
    start = time.monotonic()
    apt_install(BUILD_PACKAGES)
    if not REFLECT2.is_dir():
        raise HarnessError(f"{REFLECT2} missing (package golang-github-modern-go-reflect2-dev)")
    work = cache_dir() / "kubernetes-build"
    work.mkdir(parents=True, exist_ok=True)
    build_log = work / "build.log"
    build_log.write_text("")

    # 1. the source package, fetched with a private apt configuration (deb-src entries only)
    tarballs = sorted(work.glob("kubernetes_*.orig.tar.*"))
    if not tarballs:
        log(f"fetching Debian's kubernetes {K8S_VERSION} source package")
        parts, lists = work / "apt-sources", work / "apt-lists"
        shutil.rmtree(parts, ignore_errors=True)
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        _debian_source_entries(parts)
        apt_opts = [
            "-o", "Dir::Etc::sourcelist=/dev/null",
            "-o", f"Dir::Etc::sourceparts={parts}",
            "-o", f"Dir::State::Lists={lists}",
        ]  # fmt: skip
        run(["apt-get", *apt_opts, "update", "-qq"], what="apt-get update (deb-src)")
        run(
            ["apt-get", *apt_opts, "source", "--download-only", "-qq", "kubernetes"],
            what="apt-get source kubernetes",
            cwd=work,
            timeout=900,
        )
        tarballs = sorted(work.glob("kubernetes_*.orig.tar.*"))
        if not tarballs:
            raise HarnessError(
                f"apt-get source left no kubernetes {K8S_VERSION} orig tarball in {work} "
                "(Debian bookworm carries that version)"
            )

    # 2. a fresh tree, patched
    log("unpacking and patching the Kubernetes source")
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    run(["tar", "-xf", tarballs[-1], "-C", src], what="unpacking the Kubernetes source")
    trees = [p for p in src.iterdir() if (p / "cmd/kubelet").is_dir()]
    if len(trees) != 1:
        raise HarnessError(f"{tarballs[-1]} did not unpack into one Kubernetes tree under {src}")
    tree = trees[0]
    if not tree.name.endswith(K8S_VERSION):
        raise HarnessError(f"{tarballs[-1]} unpacked into {tree.name}, not {K8S_VERSION}")
    vendored = tree / "vendor/github.com/modern-go/reflect2"
    shutil.rmtree(vendored)
    shutil.copytree(REFLECT2, vendored)
    _replace(
        tree / "pkg/kubelet/dockershim/docker_sandbox.go",
        "defaultSandboxOOMAdj int = -998",
        "defaultSandboxOOMAdj int = 0",
    )
    _replace(
        tree / "pkg/kubelet/kubelet_node_status.go",
        "if nodeIP.IsLoopback() {",
        "if nodeIP.IsLoopback() && false {",
    )
    _replace(
        tree / "pkg/kubelet/qos/policy.go",
        "guaranteedOOMScoreAdj int = -997",
        "guaranteedOOMScoreAdj int = 0",
    )

    # 3. compile, offline, with a GOPATH layout that the 1.20 build scripts expect
    gopath_link = tree / ".go/src/k8s.io/kubernetes"
    gopath_link.parent.mkdir(parents=True, exist_ok=True)
    gopath_link.symlink_to("../../..")
    home = work / "home"
    home.mkdir(exist_ok=True)
    env = {
        "GOPATH": str(tree / ".go"),
        "GOCACHE": str(work / "gocache"),
        "CGO_ENABLED": "0",
        "GOPROXY": "off",
        "GOFLAGS": "",
        "HOME": str(home),
        "KUBE_GIT_VERSION": f"v{K8S_VERSION}",
        "KUBE_GIT_TREE_STATE": "clean",
        "KUBE_GIT_COMMIT": K8S_COMMIT,
        "KUBE_GIT_MAJOR": "1",
        "KUBE_GIT_MINOR": K8S_VERSION.split(".")[1],
    }
    what = " ".join(f"cmd/{b}" for b in BINARIES)
    log(f"compiling {what} (several minutes on 2 cores; log: {build_log})")
    run(["make", f"WHAT={what}"], what="Kubernetes build", env=env, cwd=tree, log_file=build_log)

    # 4. the sandbox binary, static, so that an image holding only it runs
    out = bin_dir()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run(
        ["gcc", "-static", "-O2", "-o", out / "pause", tree / "build/pause/linux/pause.c"],
        what="compiling pause",
    )
    for name in BINARIES:
        shutil.copy2(tree / "_output/bin" / name, out / name)
    (out / ".complete").write_text(f"v{K8S_VERSION} patch revision {PATCH_REV}\n")
    for old in cache_dir().glob("kubernetes-v*-p*"):
        if old != out.parent:  # builds of earlier patch revisions
            shutil.rmtree(old, ignore_errors=True)
    # Keep the downloaded tarball (small), drop the tree and the Go cache (gigabytes).
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(work / "gocache", ignore_errors=True)
    log(f"Kubernetes built in {time.monotonic() - start:.0f}s into {out}")


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        raise HarnessError(f"patch target not found in {path}: {old!r}")
    path.write_text(text.replace(old, new))


def main() -> int:
    start = time.monotonic()
    try:
        path = ensure_built()
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path} ({time.monotonic() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
