"""What the image build needs from the host: its tools (apt), its cache folder, a Debian rootfs.

There is no registry here, so the Debian base comes from `debootstrap` (the same bookworm the
official python slim image is built from) and is kept as a tar in the cache, keyed by its recipe.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from kiln_devcluster.images.progress import run, step

TOOLS = {"buildah": "buildah", "debootstrap": "debootstrap", "ctr": "containerd", "containerd": "containerd"}
"""Command -> the Debian package that provides it."""

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
ROOTFS_PACKAGES = (
    # What python:3.11-slim-bookworm offers that kiln's Dockerfiles use: python/python3 with
    # venv and pip, a shared libpython (Triton's python backend stub links it), CA certificates,
    # /etc/services (netbase) and useradd (passwd).
    "python3", "python3-venv", "python3-pip", "python-is-python3", "libpython3.11",
    "ca-certificates", "netbase", "passwd",
)


def cache_dir() -> Path:
    """~/.cache/kiln/images, or $KILN_IMAGES_CACHE."""
    raw = os.environ.get("KILN_IMAGES_CACHE")
    return Path(raw) if raw else Path.home() / ".cache" / "kiln" / "images"


def ensure_tools() -> None:
    """apt-get install buildah, debootstrap and containerd where missing (idempotent, root only)."""
    missing = sorted({pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"missing host packages {missing}: install them with apt-get (needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with step(f"apt-get install {' '.join(missing)}"):
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq", *missing], env=env)


def rootfs_key() -> str:
    """Content key of the debootstrap recipe: a new package list or suite makes a new rootfs."""
    recipe = "\n".join([SUITE, MIRROR, *ROOTFS_PACKAGES])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def _sources_list() -> str:
    return (
        f"deb {MIRROR} {SUITE} main\n"
        f"deb {MIRROR} {SUITE}-updates main\n"
        f"deb http://deb.debian.org/debian-security {SUITE}-security main\n"
    )


def debian_rootfs() -> Path:
    """The folder holding `rootfs.tar` (minbase bookworm + ROOTFS_PACKAGES); built once per recipe."""
    folder = cache_dir() / f"rootfs-{SUITE}-{rootfs_key()}"
    tar = folder / "rootfs.tar"
    if tar.exists():
        return folder
    tree = folder / "tree"
    with step(f"debootstrap --variant=minbase {SUITE} (+ {len(ROOTFS_PACKAGES)} packages)"):
        if tree.exists():  # a half-finished earlier attempt: debootstrap does not resume
            shutil.rmtree(tree)
        tree.mkdir(parents=True)
        run(["debootstrap", "--variant=minbase", f"--include={','.join(ROOTFS_PACKAGES)}",
             SUITE, str(tree), MIRROR], log=folder / "debootstrap.log")
        (tree / "etc/apt/sources.list").write_text(_sources_list())
        # Like the slim images: no package cache or lists in the base (RUN steps apt-get update).
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (tree / sub).glob("*"):
                if item.is_file():
                    item.unlink()
    with step("pack the rootfs"):
        partial = folder / "rootfs.tar.partial"
        run(["tar", "--numeric-owner", "-C", str(tree), "-cf", str(partial), "."])
        os.replace(partial, tar)  # the tar's presence marks the rootfs complete
        shutil.rmtree(tree)
    return folder
