"""Build the images with buildah, skipping any whose content key is unchanged.

An image is rebuilt only when its key (cachekey.py: its Dockerfile, the files it copies, its build
arguments, its base image's id) differs from the key recorded at its last build, or the image is
gone from buildah's storage. Inside a build, buildah's own layer cache (`--layers`) keeps every
layer before the first changed instruction, so a code change rebuilds only the thin code layer.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from kiln_devcluster.images import cachekey, host
from kiln_devcluster.images.progress import CommandFailed, run, step
from kiln_devcluster.images.specs import BUILD_CA, REPO_ROOT, ImageSpec, host_build_args, host_ca_bundle

UV_CACHE_ID = "kiln-uv"
"""The `RUN --mount=type=cache,id=...` the Dockerfiles use for uv's download cache."""


@dataclass(frozen=True)
class Built:
    name: str
    ref: str
    image_id: str
    key: str
    seconds: float
    skipped: bool


def image_id(ref: str) -> str | None:
    """The full id of the local image `ref`, or None when buildah has no such image."""
    try:
        out = run(["buildah", "images", "--no-trunc", "--noheading", "--format", "{{.ID}}", ref])
    except CommandFailed:
        return None
    ids = out.split()
    return ids[0].removeprefix("sha256:") if ids else None


def context_for(spec: ImageSpec) -> Path:
    """The build context: the debootstrap rootfs for the python base, the repository otherwise."""
    return host.debian_rootfs() if spec.name == "base-python" else REPO_ROOT


def build_args(spec: ImageSpec, refs: dict[str, str], ca: Path | None) -> dict[str, str]:
    args = {**host_build_args(ca), **dict(spec.args)}
    if spec.base:
        args["BASE"] = refs[spec.base]
    return args


def key_of(spec: ImageSpec, args: dict[str, str], base_ids: dict[str, str]) -> str:
    keys = cachekey.layer_keys(spec.dockerfile.read_text(), context_for(spec), args, base_ids)
    return cachekey.image_key(keys)


def _stamp(spec: ImageSpec) -> Path:
    return host.cache_dir() / "stamps" / f"{spec.name}.json"


def _share_uv_cache() -> None:
    """Point buildah's `kiln-uv` cache mount at this host's uv cache, when it has one.

    The project venv was installed from the same lock with the same uv, so the image builds reuse
    its downloads instead of fetching torch and the nvidia libraries again (and a second 6 GB
    cache is never written). Without a host cache buildah keeps its own (what a fresh machine
    gets). buildah 1.28 (Debian 12) keeps cache mounts in /var/tmp/buildah-cache, newer releases
    in /var/tmp/buildah-cache-<uid>: both get the link.
    """
    uv_cache = Path(os.environ.get("UV_CACHE_DIR", Path.home() / ".cache" / "uv"))
    if not uv_cache.is_dir():
        return
    for parent in (Path("/var/tmp/buildah-cache"), Path(f"/var/tmp/buildah-cache-{os.getuid()}")):
        mount = parent / UV_CACHE_ID
        if mount.exists() or mount.is_symlink():
            continue
        parent.mkdir(parents=True, exist_ok=True)
        mount.symlink_to(uv_cache)


def _is_progress(line: str) -> bool:
    return re.match(r"(\[\d+/\d+\] )?STEP \d|--> Using cache", line) is not None


def build_one(spec: ImageSpec, refs: dict[str, str], base_ids: dict[str, str], force: bool = False) -> Built:
    """Build `spec` unless its key and image are unchanged; returns what was (or already was) built."""
    ca = host_ca_bundle()
    args = build_args(spec, refs, ca)
    key = key_of(spec, args, base_ids)
    stamp = _stamp(spec)
    current = image_id(spec.ref)
    if not force and current and stamp.exists():
        recorded = json.loads(stamp.read_text())
        if recorded.get("key") == key and recorded.get("image_id") == current:
            print(f"[images] {spec.name}: up to date ({spec.ref}, key {key[:12]})", flush=True)
            return Built(spec.name, spec.ref, current, key, 0.0, True)
    _share_uv_cache()
    argv = ["buildah", "bud", "--layers", "--isolation", "chroot", "-f", str(spec.dockerfile), "-t", spec.ref]
    for name, value in sorted(args.items()):
        argv += ["--build-arg", f"{name}={value}"]
    if ca is not None:
        argv += ["--volume", f"{ca}:{BUILD_CA}:ro"]
    argv.append(str(context_for(spec)))
    start = time.monotonic()
    with step(f"build {spec.name} ({spec.ref})"):
        run(argv, log=host.cache_dir() / "logs" / f"build-{spec.name}.log", echo=_is_progress)
    new_id = image_id(spec.ref)
    if new_id is None:
        raise CommandFailed(f"buildah bud reported success but {spec.ref} is not in the image store")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "image_id": new_id}))
    return Built(spec.name, spec.ref, new_id, key, time.monotonic() - start, False)


def build_all(specs: list[ImageSpec], force: bool = False) -> list[Built]:
    """Build `specs` in order (each base before what needs it)."""
    host.ensure_tools()
    refs = {s.name: s.ref for s in specs}
    base_ids: dict[str, str] = {}
    out = []
    for spec in specs:
        built = build_one(spec, refs, base_ids, force)
        base_ids[spec.ref] = built.image_id  # the next images' FROM ${BASE} is keyed by this id
        out.append(built)
    return out
