"""One copy of an image's bytes across nodes: chain ids and the hard-link rules (share.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kiln_devcluster.images.share import chain_ids, link_same, share_blobs, share_tree


def test_chain_ids_follow_the_oci_rule() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    second = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_ids([a, b]) == [a, second]
    assert chain_ids([a]) == [a]


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_tree_files_become_one_inode_and_the_bytes_freed_are_counted(tmp_path: Path) -> None:
    keep = _write(tmp_path / "n0" / "usr" / "lib" / "libtorch.so", b"x" * 1000)
    other = _write(tmp_path / "n1" / "usr" / "lib" / "libtorch.so", b"x" * 1000)
    assert share_tree(tmp_path / "n0", tmp_path / "n1") == 1000
    assert os.stat(keep).st_ino == os.stat(other).st_ino
    assert other.read_bytes() == b"x" * 1000
    assert share_tree(tmp_path / "n0", tmp_path / "n1") == 0  # already one inode


def test_files_that_differ_in_size_or_mode_are_left_alone(tmp_path: Path) -> None:
    keep = _write(tmp_path / "a" / "f", b"12345")
    shorter = _write(tmp_path / "b" / "f", b"1234")
    other_mode = _write(tmp_path / "c" / "f", b"12345", 0o755)
    assert link_same(keep, shorter) == 0
    assert link_same(keep, other_mode) == 0
    assert os.stat(other_mode).st_ino != os.stat(keep).st_ino
    assert link_same(keep, tmp_path / "missing") == 0


def test_blobs_link_whatever_their_mode(tmp_path: Path) -> None:
    digest = "sha256:" + "c" * 64
    layout = _write(tmp_path / "layout" / "sha256" / ("c" * 64), b"blob", 0o644)
    content = _write(tmp_path / "content" / "sha256" / ("c" * 64), b"blob", 0o444)
    assert share_blobs(tmp_path / "layout", tmp_path / "content", [digest]) == 4
    assert os.stat(layout).st_ino == os.stat(content).st_ino
    assert not list((tmp_path / "content" / "sha256").glob(".kiln-link-*"))
