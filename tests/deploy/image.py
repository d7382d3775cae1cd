"""Builds the Dockerfile with buildah (Debian's package; daemonless, chroot
isolation, vfs storage), since no Docker daemon runs here.

Docker Hub is out of reach, so `python:3.11-slim-bookworm` cannot be pulled: the
build gets PYTHON_IMAGE set to a local stand-in made from the same Debian
release with debootstrap (Debian bookworm with its python3.11, python3-venv and
ca-certificates; cached between runs). Everything else - both stages, pip
installing the project from the build context, the non-root user, the image
config - is the Dockerfile's own. The stand-in carries this machine's CA bundle
and PIP_CERT, as the build host's network needs; the Dockerfile does not.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.chart import ROOT

CACHE = Path(os.environ.get("PROFILE_GATEWAY_IMAGE_CACHE", "/var/cache/profile-gateway-ci"))
ROOTFS = CACHE / "rootfs-bookworm-python3"
STORAGE = CACHE / "containers"
MIRROR = os.environ.get("PROFILE_GATEWAY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
INSTALL_HINT = (
    "buildah and debootstrap are needed to build the image here: "
    "apt-get install -y --no-install-recommends buildah debootstrap (./scripts/test does this)"
)


def require_tools() -> None:
    for tool in ("buildah", "debootstrap"):
        assert shutil.which(tool), f"{tool} is missing. {INSTALL_HINT}"


def buildah_argv(*args: str) -> list[str]:
    """buildah on the suite's own storage (vfs: works on any filesystem, no fuse)."""
    storage = ["--root", str(STORAGE / "storage"), "--runroot", str(STORAGE / "run")]
    return ["buildah", *storage, "--storage-driver", "vfs", *args]


def buildah(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = buildah_argv(*args)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout}\n{result.stderr}"
    return result


def ensure_rootfs() -> Path:
    """A minimal Debian bookworm with python3.11 and venv, made once."""
    done = ROOTFS / ".complete"
    if done.exists():
        return ROOTFS
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = CACHE / f"rootfs-partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(partial),
            MIRROR,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shutil.rmtree(ROOTFS, ignore_errors=True)
    partial.rename(ROOTFS)
    done.touch()
    return ROOTFS


def ensure_base_image() -> str:
    """The stand-in for python:3.11-slim-bookworm, tagged by the CA bundle it carries."""
    rootfs = ensure_rootfs()
    bundle = HOST_CA.read_bytes()
    tag = f"localhost/profile-gateway-base:bookworm-{hashlib.sha256(bundle).hexdigest()[:12]}"
    if buildah("images", "--quiet", tag, check=False).returncode == 0:
        return tag
    (rootfs / "etc/ssl/certs/ca-certificates.crt").write_bytes(bundle)
    container = buildah("from", "--quiet", "scratch").stdout.strip()
    try:
        buildah("copy", "--quiet", container, str(rootfs), "/")
        buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            f"PIP_CERT={HOST_CA}",
            container,
        )
        buildah("commit", "--quiet", container, tag)
    finally:
        buildah("rm", container, check=False)
    return tag


@dataclass
class BuiltImage:
    tag: str
    seconds: float
    log: str


def build(tag: str) -> BuiltImage:
    base = ensure_base_image()
    started = time.monotonic()
    result = buildah(
        "bud",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--format",
        "docker",
        "--layers=false",
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "--tag",
        tag,
        "--file",
        str(ROOT / "Dockerfile"),
        str(ROOT),
        timeout=900,
    )
    return BuiltImage(tag, time.monotonic() - started, result.stdout + result.stderr)


def remove(tag: str) -> None:
    buildah("rm", "--all", check=False)
    buildah("rmi", "--force", tag, check=False)
    buildah("rmi", "--prune", check=False)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (buildah run forks the container's process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode() for part in raw.split(b"\0") if part]


def is_gateway_python(argv: list[str]) -> bool:
    """The image's `gateway` script under its Python (buildah's chroot helper
    that forks it carries the same path as its first argument)."""
    return (
        len(argv) >= 2
        and Path(argv[0]).name.startswith("python")
        and argv[1] == "/opt/gateway/bin/gateway"
    )
