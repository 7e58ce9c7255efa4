"""Build the ``mas`` container image offline: a Debian bookworm base image with Python made by
debootstrap (no registry needed), a wheelhouse of the project's dependencies downloaded on the
host for the base image's Python and glibc, and ``docker build`` of the repository's Dockerfile
with ``--build-arg BASE_IMAGE=...`` and ``--network host``.

Called by ``e2e/cluster.py`` (``up`` / ``image``). The base image and the wheelhouse are cached
(the first in the harness's Docker data root, the second under ``<cache>/wheelhouse``).
"""

from __future__ import annotations

import email.parser
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from e2e.dockerd import DockerDaemon, docker_client, unmount_under
from e2e.util import REPO_ROOT, HarnessError, apt_install, cache_dir, log, run

MAS_IMAGE = "mas:0.1.0"
BASE_IMAGE = "mas-e2e/python:bookworm"
PAUSE_IMAGE = "mas-e2e/pause:3.4.1"
# Bump to rebuild the cached base image after changing its recipe.
BASE_REV = "1"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# Never sent into the build context (besides what .dockerignore already drops).
_CONTEXT_SKIP = {".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", ".mas"}


def _debian_mirror() -> str | None:
    """The first Debian archive URI of the machine's apt sources (debootstrap's default if none)."""
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in src.read_text().splitlines():
            if line.startswith("URIs:") and line.rstrip().endswith("/debian"):
                return line.split()[1]
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.exists():
        for line in sources_list.read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[0] == "deb" and parts[1].endswith("/debian"):
                return parts[1]
    return None


def ensure_base_image(docker: DockerDaemon) -> str:
    """A minimal Debian bookworm with python3 (and ``python``), imported as BASE_IMAGE."""
    if docker.image_exists(BASE_IMAGE):
        labels = docker.docker(
            "image", "inspect", "--format", "{{json .Config.Labels}}", BASE_IMAGE
        )  # fmt: skip
        if (json.loads(labels.stdout or b"null") or {}).get("mas-e2e.rev") == BASE_REV:
            return BASE_IMAGE
    apt_install(["debootstrap"], {"debootstrap": "debootstrap"})
    start = time.monotonic()
    rootfs = cache_dir() / "base-rootfs"
    unmount_under(rootfs)
    shutil.rmtree(rootfs, ignore_errors=True)
    cmd = [
        "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
        "bookworm", str(rootfs),
    ]  # fmt: skip
    mirror = _debian_mirror()
    if mirror:
        cmd.append(mirror)
    log("making the base image with debootstrap (about a minute)")
    try:
        run(cmd, what="debootstrap", timeout=900, log_file=cache_dir() / "debootstrap.log")
    finally:
        unmount_under(rootfs)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        path = rootfs / junk
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                elif child.name != "lock":
                    child.unlink(missing_ok=True)
    tar = subprocess.run(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], capture_output=True, check=False
    )
    if tar.returncode != 0:
        raise HarnessError(f"tar of {rootfs} failed: {tar.stderr.decode()[-2000:]}")
    docker.docker(
        "import",
        "-c", f"LABEL mas-e2e.rev={BASE_REV}",
        "-c", "ENV LANG=C.UTF-8",
        "-c", 'CMD ["python3"]',
        "-", BASE_IMAGE,
        input=tar.stdout,
        what="docker import of the base image",
    )  # fmt: skip
    shutil.rmtree(rootfs, ignore_errors=True)
    log(f"base image {BASE_IMAGE} made in {time.monotonic() - start:.0f}s")
    return BASE_IMAGE


def ensure_pause_image(docker: DockerDaemon, pause_binary: Path) -> str:
    """The pod sandbox image, holding only the static ``pause`` binary built from source."""
    if docker.image_exists(PAUSE_IMAGE):
        return PAUSE_IMAGE
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(pause_binary, arcname="pause")
    docker.docker(
        "import", "-c", 'ENTRYPOINT ["/pause"]', "-", PAUSE_IMAGE,
        input=buf.getvalue(), what="docker import of the pause image",
    )  # fmt: skip
    return PAUSE_IMAGE


def _image_python(docker: DockerDaemon, image: str) -> tuple[str, str]:
    """(full Python version ``X.Y.Z``, glibc ``X.Y``) of ``image``."""
    probe = "import platform; print(platform.python_version(), platform.libc_ver()[1])"
    out = docker.docker(
        "run", "--rm", "--network", "none", image, "python3", "-c", probe,
        what=f"probing the Python of {image}",
    ).stdout.decode().split()  # fmt: skip
    if len(out) != 2:
        raise HarnessError(f"unexpected answer from the Python of {image}: {out}")
    return out[0], out[1]


IMAGE_EXTRAS = ("sidecar", "operator", "local", "otel")  # what the image installs: mas[all]


def project_requirements() -> list[str]:
    """The runtime dependencies of pyproject.toml and of the extras the image installs, plus
    setuptools to build the project."""
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    build = data.get("build-system", {}).get("requires", ["setuptools"])
    extras = data["project"]["optional-dependencies"]
    image = [r for e in IMAGE_EXTRAS for r in extras[e] if not r.startswith("mas[")]
    return [*data["project"]["dependencies"], *image, *build]


def _missing_for_target(house: Path, python_full: str) -> list[str]:
    """Requirements of the downloaded wheels that apply on the target Python but have no wheel
    in ``house``: pip evaluates markers such as ``python_full_version < "3.11.3"`` against the
    host's Python, not the target's."""
    short = ".".join(python_full.split(".")[:2])
    env = {**default_environment(), "python_version": short, "python_full_version": python_full}
    env["implementation_version"] = python_full
    present = {canonicalize_name(w.name.split("-")[0]) for w in house.glob("*.whl")}
    missing: dict[str, str] = {}
    for wheel in house.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            headers = email.parser.Parser().parsestr(zf.read(meta).decode(errors="replace"))
        for line in headers.get_all("Requires-Dist") or []:
            req = Requirement(line)
            if req.marker is None or "extra" in str(req.marker):
                continue  # unconditional ones pip got; extras are asked for by name
            name = canonicalize_name(req.name)
            if name not in present and req.marker.evaluate(env):
                missing[name] = str(req).split(";")[0]
    return sorted(missing.values())


def ensure_wheelhouse(python_full: str, glibc: str) -> Path:
    """Binary wheels of the dependencies for that CPython and glibc (x86_64), at the versions
    of the lock (constraints.txt), cached by both and by the dependency list and the lock;
    downloaded on the host, where pip's TLS setup works."""
    requirements = project_requirements()
    lock = REPO_ROOT / "constraints.txt"
    digest = hashlib.sha256(
        json.dumps([requirements, lock.read_text(), python_full, glibc]).encode()
    )
    python_version = ".".join(python_full.split(".")[:2])
    house = (
        cache_dir()
        / "wheelhouse"
        / f"cp{python_version.replace('.', '')}-{digest.hexdigest()[:16]}"
    )
    if (house / ".complete").exists():
        return house
    start = time.monotonic()
    shutil.rmtree(house, ignore_errors=True)
    house.mkdir(parents=True)
    glibc_minor = int(glibc.split(".")[1]) if glibc.startswith("2.") else 17
    platforms = [f"manylinux_2_{m}_x86_64" for m in range(glibc_minor, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    abi = "cp" + python_version.replace(".", "")
    download = [
        sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
        "--python-version", python_version, "--implementation", "cp", "--abi", abi,
        *[arg for p in platforms for arg in ("--platform", p)],
        "--constraint", str(lock), "--dest", str(house),
    ]  # fmt: skip
    log(f"downloading the wheelhouse for CPython {python_full} into {house}")
    batch = requirements
    for _ in range(5):
        run([*download, *batch], what="pip download of the wheelhouse", timeout=900)
        batch = _missing_for_target(house, python_full)
        if not batch:
            break
    (house / ".complete").write_text("\n".join(requirements) + "\n")
    log(f"wheelhouse ready in {time.monotonic() - start:.0f}s")
    return house


def _context_tar(wheelhouse: Path) -> bytes:
    """The repository (minus caches and VCS data) plus ``wheelhouse/``, as a tar for
    ``docker build -``; the repository's .dockerignore then narrows it further."""
    buf = io.BytesIO()

    def skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(p in _CONTEXT_SKIP or p == "__pycache__" or p.endswith(".egg-info") for p in parts):
            return None
        if parts and parts[0] == "wheelhouse" and info.name != "wheelhouse":
            return None  # a wheelhouse/ in the tree is replaced by the harness's own
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    # GNU format: the classic builder misreads the Dockerfile of some PAX-format archives.
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for child in sorted(REPO_ROOT.iterdir()):
            if child.name in _CONTEXT_SKIP or child.name == "wheelhouse":
                continue
            tar.add(child, arcname=child.name, filter=skip)
        for wheel in sorted(wheelhouse.glob("*.whl")):
            tar.add(wheel, arcname=f"wheelhouse/{wheel.name}")
    return buf.getvalue()


def _image_id(docker: DockerDaemon, ref: str) -> str | None:
    proc = subprocess.run(
        [docker_client(), "--host", docker.host, "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return proc.stdout.strip() if proc.returncode == 0 else None


def build_mas_image(docker: DockerDaemon, tag: str = MAS_IMAGE) -> dict[str, float]:
    """Build ``tag`` from the repository's Dockerfile on the debootstrap base with a
    wheelhouse; return timings and the image size in MB."""
    if not (REPO_ROOT / "Dockerfile").exists():
        raise HarnessError(f"no Dockerfile in {REPO_ROOT}")
    base = ensure_base_image(docker)
    python_full, glibc = _image_python(docker, base)
    house = ensure_wheelhouse(python_full, glibc)
    start = time.monotonic()
    previous = _image_id(docker, tag)
    build_log = cache_dir() / "image-build.log"
    build_log.write_text("")
    log(f"docker build -t {tag} (base {base}, CPython {python_full}; log: {build_log})")
    docker.docker(
        "build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}",
        "-t", tag, "-",
        input=_context_tar(house), what=f"docker build of {tag}", timeout=1200,
        log_file=build_log,
    )  # fmt: skip
    took = time.monotonic() - start
    size = int(docker.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout)
    log(f"image {tag} built in {took:.0f}s, {size / 1e6:.0f} MB")
    # Drop the image this build replaced; keep the (untagged) build-stage layers, which are
    # the layer cache of the next build, unless they are old.
    if previous and previous != _image_id(docker, tag):
        subprocess.run(
            [docker_client(), "--host", docker.host, "rmi", previous],
            capture_output=True, check=False,
        )  # fmt: skip
    subprocess.run(
        [docker_client(), "--host", docker.host, "image", "prune", "-f", "--filter", "until=168h"],
        capture_output=True, check=False,
    )  # fmt: skip
    return {"image_build_s": took, "image_size_mb": size / 1e6}
