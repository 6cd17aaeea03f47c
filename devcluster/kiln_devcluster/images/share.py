"""One copy on disk of an image imported into several nodes' containerd (hard links).

Each node runs a containerd of its own (two kubelets on one CRI would kill each other's pods as
orphans), so each holds an image twice over: the layer blobs in its content store and the layers
unpacked as overlayfs snapshots. For the trainer that is 2 × 6.9 GB per node. The bytes are the
same everywhere, so after an import they are hard-linked:

- content blobs: the image's OCI layout in the cache (what the import streamed) and every node's
  content store hold the same uncompressed blobs, named by digest → one inode for all;
- snapshots: a node's unpacked layer is the same tree as the first node's unpacked layer of the
  same chain id → each regular file is linked to the first node's file.

Only committed snapshots (read-only lower layers; containers write to an upper dir of their own)
and immutable blobs are linked; a node that deletes its copy removes a link, not the others'.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import uuid
from pathlib import Path

from kiln_devcluster.images.progress import run


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The snapshot names containerd unpacks an image's layers to, bottom first (OCI image spec)."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


def link_same(keep: Path, other: Path, owner_and_mode: bool = True) -> int:
    """Replace `other` by a hard link to `keep` when both are the same regular file in all but
    inode (size, and mode and owner unless `owner_and_mode` is False: a blob's bytes are checked
    by its digest, its mode is only the writer's habit); returns the bytes freed (0 when nothing
    was linked)."""
    try:
        a, b = keep.lstat(), other.lstat()
    except FileNotFoundError:
        return 0
    if not (stat.S_ISREG(a.st_mode) and stat.S_ISREG(b.st_mode)) or (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        return 0
    if a.st_size != b.st_size:
        return 0
    if owner_and_mode and (a.st_mode, a.st_uid, a.st_gid) != (b.st_mode, b.st_uid, b.st_gid):
        return 0
    tmp = other.with_name(f".kiln-link-{uuid.uuid4().hex[:8]}")
    os.link(keep, tmp)
    os.replace(tmp, other)  # atomic: a reader sees the old or the new name, never none
    return b.st_size if b.st_nlink == 1 else 0


def share_blobs(layout_blobs: Path, content_blobs: Path, digests: list[str]) -> int:
    """Link a node's content blobs to the layout's copies; returns the bytes freed."""
    freed = 0
    for digest in digests:
        algo, _, hexd = digest.partition(":")
        freed += link_same(layout_blobs / algo / hexd, content_blobs / algo / hexd, owner_and_mode=False)
    return freed


def share_tree(keep: Path, other: Path) -> int:
    """Link every regular file of the tree `other` to the same file of `keep`; returns bytes freed."""
    freed = 0
    for dirpath, _dirs, files in os.walk(other):
        rel = Path(dirpath).relative_to(other)
        for name in files:
            freed += link_same(keep / rel / name, Path(dirpath) / name)
    return freed


def _ctr(address: str, namespace: str, *args: str) -> str:
    return run(["ctr", "--address", address, "--namespace", namespace, *args])


def layer_dirs(address: str, namespace: str, chain: list[str]) -> list[Path]:
    """The overlayfs directories of an image's unpacked layers, bottom first.

    containerd does not say where a snapshot lives; a read-only view of the top layer does: its
    mount names every layer's directory (a bind mount of the one directory for a 1-layer image).
    """
    key = f"kiln-share-{uuid.uuid4().hex[:12]}"
    out = _ctr(address, namespace, "snapshots", "--snapshotter", "overlayfs", "view", "--mounts", key, chain[-1])
    try:
        mounts = json.loads(out)
    finally:
        _ctr(address, namespace, "snapshots", "--snapshotter", "overlayfs", "rm", key)
    m = mounts[0]
    if m.get("Type") == "bind":
        dirs = [m["Source"]]
    else:
        lower = next(o for o in m.get("Options", []) if o.startswith("lowerdir="))
        dirs = lower.removeprefix("lowerdir=").split(":")[::-1]  # overlay lists the top layer first
    if len(dirs) != len(chain):
        raise RuntimeError(f"view of {chain[-1]} in {address}: {len(dirs)} layer dirs for {len(chain)} layers")
    return [Path(d) for d in dirs]


def share_layers(first: tuple[str, str], other: tuple[str, str], chain: list[str]) -> int:
    """Link `other` node's unpacked layers of `chain` to the `first` node's; returns bytes freed.

    Each argument is (containerd address, namespace)."""
    keep = layer_dirs(*first, chain)
    mine = layer_dirs(*other, chain)
    return sum(share_tree(k, m) for k, m in zip(keep, mine, strict=True) if k != m)
