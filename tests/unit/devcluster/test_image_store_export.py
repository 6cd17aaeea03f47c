"""The OCI export reads buildah's store: tar-split replay gives the layer's exact tar, and the
layout gets only the blobs it lacks (a synthetic store: no buildah)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from kiln_devcluster.images.layout import current_manifest, write_layout
from kiln_devcluster.images.storage import Store


def _layer_tar(files: dict[str, bytes]) -> tuple[bytes, list[dict[str, object]]]:
    """A tar of `files` and its tar-split entries: the bytes between contents as segments
    (headers, padding, the end), each file's contents by name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    body = buf.getvalue()
    entries: list[dict[str, object]] = []
    pos = 0
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        for m in tar.getmembers():
            entries.append({"type": 2, "payload": base64.b64encode(body[pos:m.offset_data]).decode()})
            entries.append({"type": 1, "name": m.name, "size": m.size})
            pos = m.offset_data + m.size
    entries.append({"type": 2, "payload": base64.b64encode(body[pos:]).decode()})
    return body, entries


def _store(root: Path, layers: list[dict[str, bytes]]) -> tuple[Store, str, list[bytes]]:
    records, tars, parent = [], [], None
    for i, files in enumerate(layers):
        body, entries = _layer_tar(files)
        lid = f"layer{i}"
        (root / "overlay" / lid / "diff").mkdir(parents=True)
        for name, data in files.items():
            (root / "overlay" / lid / "diff" / name).write_bytes(data)
        (root / "overlay-layers").mkdir(exist_ok=True)
        with gzip.open(root / "overlay-layers" / f"{lid}.tar-split.gz", "wt") as f:
            f.writelines(json.dumps(e) + "\n" for e in entries)
        records.append({"id": lid, "parent": parent, "diff-digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                        "diff-size": len(body)})
        tars.append(body)
        parent = lid
    (root / "overlay-layers" / "layers.json").write_text(json.dumps(records))
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [r["diff-digest"] for r in records]}}).encode()
    image_id = hashlib.sha256(config).hexdigest()
    (root / "overlay-images" / image_id).mkdir(parents=True)
    key = base64.b64encode(f"sha256:{image_id}".encode()).decode()
    (root / "overlay-images" / image_id / f"={key}").write_bytes(config)
    (root / "overlay-images" / "images.json").write_text(json.dumps([{"id": image_id, "layer": parent}]))
    return Store(root), image_id, tars


def test_replay_gives_the_exact_tar_and_the_layout_names_every_blob_by_its_digest(tmp_path: Path) -> None:
    store, image_id, tars = _store(tmp_path / "store", [{"base.txt": b"torch" * 300}, {"code.py": b"print(1)\n"}])
    for layer, tar in zip(store.layers(image_id), tars, strict=True):
        out = io.BytesIO()
        store.write_layer(layer, out)
        assert out.getvalue() == tar
    layout = tmp_path / "layout"
    write_layout(store, image_id, layout)
    for blob in (layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    manifest = json.loads((layout / "blobs" / "sha256" / str(current_manifest(layout)["digest"])[7:]).read_bytes())
    assert manifest["config"]["digest"] == f"sha256:{image_id}"
    unpacked = [gzip.decompress((layout / "blobs" / "sha256" / la["digest"][7:]).read_bytes()) for la in manifest["layers"]]
    assert unpacked == tars  # each blob is its layer's exact tar, gzipped


def test_a_layer_the_layout_holds_is_not_written_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, image_id, _ = _store(tmp_path / "store", [{"base.txt": b"x" * 5000}, {"code.py": b"y"}])
    layout = tmp_path / "layout"
    write_layout(store, image_id, layout)
    def layer_blobs() -> dict[str, int]:
        manifest = json.loads((layout / "blobs" / "sha256" / str(current_manifest(layout)["digest"])[7:]).read_bytes())
        return {la["digest"]: (layout / "blobs" / "sha256" / la["digest"][7:]).stat().st_mtime_ns
                for la in manifest["layers"]}

    before = layer_blobs()
    write_layout(store, image_id, layout)
    assert "0 of 2 layer(s) compressed" in capsys.readouterr().out
    assert layer_blobs() == before


def test_a_changed_file_under_the_layer_is_caught_by_its_digest(tmp_path: Path) -> None:
    store, image_id, _ = _store(tmp_path / "store", [{"code.py": b"print(1)\n"}])
    (tmp_path / "store" / "overlay" / "layer0" / "diff" / "code.py").write_bytes(b"print(2)\n")
    with pytest.raises(RuntimeError, match="do not hash"):
        write_layout(store, image_id, tmp_path / "layout")
    assert not list((tmp_path / "layout" / "blobs" / "sha256").glob("*"))  # nothing half-written is kept
