"""Single-layer OCI images written by hand, and their import into a containerd.

The dev cluster's own small images (the pause sandbox, CoreDNS, a busybox for
tests) are one static binary or two each: no base image, no build tool. The
archive is an OCI image layout in a tar (``oci-layout``, ``index.json``,
``blobs/sha256/...``) as ``ctr images import`` reads it. Layers are written
deterministically (fixed mtimes, owners and order), so the same inputs give
the same digest and `up` skips an import whose digest is already there.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONTAINERD_NAMESPACE = "k8s.io"
"""The namespace the CRI plugin (and so the kubelet) sees images in."""


@dataclass(frozen=True)
class Entry:
    """One path in the image's filesystem."""

    path: str
    """Absolute path inside the image, e.g. ``/bin/busybox``."""
    data: bytes | None = None
    """File content; None for a directory or a symlink."""
    mode: int = 0o755
    """Permission bits."""
    link: str | None = None
    """Symlink target (then ``data`` must be None)."""

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"Entry.path must be absolute, got {self.path!r}")
        if self.link is not None and self.data is not None:
            raise ValueError(f"Entry {self.path}: a symlink has no data")


@dataclass(frozen=True)
class Image:
    """A one-layer image: its name, files and runtime config."""

    ref: str
    """Full reference, e.g. ``kiln.local/pause:3.10-kiln1`` (a domain with a dot: never docker.io)."""
    entries: tuple[Entry, ...]
    """The filesystem; parents of each path are added as directories."""
    config: dict[str, object] = field(default_factory=dict)
    """OCI image config (``Entrypoint``, ``Cmd``, ``User``, ``Env``, ``WorkingDir``)."""

    def __post_init__(self) -> None:
        if "/" not in self.ref or ":" not in self.ref.rsplit("/", 1)[1]:
            raise ValueError(f"Image.ref must be <domain>/<name>:<tag>, got {self.ref!r}")


def _tar_info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def layer_tar(entries: tuple[Entry, ...]) -> bytes:
    """The uncompressed layer: parent directories first, then entries sorted by path."""
    buf = io.BytesIO()
    dirs = sorted({str(p) for e in entries for p in Path(e.path).parents if str(p) != "/"})
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            tar.addfile(_tar_info(d, tarfile.DIRTYPE, 0o755))
        for e in sorted(entries, key=lambda e: e.path):
            if e.link is not None:
                tar.addfile(_tar_info(e.path, tarfile.SYMTYPE, 0o777, link=e.link))
            elif e.data is None:
                tar.addfile(_tar_info(e.path, tarfile.DIRTYPE, e.mode))
            else:
                tar.addfile(_tar_info(e.path, tarfile.REGTYPE, e.mode, len(e.data)), io.BytesIO(e.data))
    return buf.getvalue()


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def oci_archive(image: Image) -> tuple[str, bytes]:
    """(manifest digest, archive bytes) of ``image``."""
    layer_digest, layer = _blob(layer_tar(image.entries))
    config = {
        "architecture": "amd64", "os": "linux", "config": image.config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    config_digest, config_bytes = _blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest, manifest_bytes = _blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": len(manifest_bytes),
            # containerd names the imported image after this annotation.
            "annotations": {"io.containerd.image.name": image.ref,
                            "org.opencontainers.image.ref.name": image.ref.rsplit(":", 1)[1]},
        }],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index).encode(),
        **{f"blobs/sha256/{d.split(':')[1]}": b for d, b in
           ((layer_digest, layer), (config_digest, config_bytes), (manifest_digest, manifest_bytes))},
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(_tar_info(d, tarfile.DIRTYPE, 0o755))
        for name, data in files.items():
            tar.addfile(_tar_info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return manifest_digest, buf.getvalue()


def ctr(ctr_bin: str, socket: Path, *args: str, stdin: bytes | None = None, timeout_s: float = 300) -> str:
    """Run ``ctr`` against one containerd in the CRI namespace; raises with its stderr."""
    argv = [ctr_bin, f"--address={socket}", f"--namespace={CONTAINERD_NAMESPACE}", *args]
    out = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)} failed: {out.stderr.decode(errors='replace').strip()}")
    return out.stdout.decode()


def image_digest(socket: Path, ref: str, ctr_bin: str = "ctr") -> str | None:
    """The manifest digest ``ref`` has in that containerd, or None when it is not there."""
    for line in ctr(ctr_bin, socket, "images", "ls", f"name=={ref}").splitlines()[1:]:
        cols = line.split()
        if cols and cols[0] == ref:
            return cols[2]
    return None


def ensure_imported(socket: Path, image: Image, ctr_bin: str = "ctr") -> bool:
    """Import ``image`` unless the same digest is there already; True when it imported."""
    digest, archive = oci_archive(image)
    if image_digest(socket, image.ref, ctr_bin) == digest:
        return False
    ctr(ctr_bin, socket, "images", "import", "-", stdin=archive)
    return True
