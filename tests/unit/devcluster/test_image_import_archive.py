"""The import archive holds only what the node's containerd lacks (no buildah, no containerd)."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from kiln_devcluster.images.build import Built
from kiln_devcluster.images.containerd import full_name, write_thin_archive


def _put(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": "application/octet-stream", "digest": f"sha256:{digest}", "size": len(data)}


@pytest.fixture()
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Built, dict[str, object], list[str]]:
    """An OCI layout as `buildah push oci:` leaves it: heavy layer, code layer, config, manifest."""
    monkeypatch.setenv("KILN_IMAGES_CACHE", str(tmp_path))
    built = Built("trainer", "ghcr.io/kiln-dev/kiln-trainer:0.1.0", "id1", "key1", 0.0, False)
    root = tmp_path / "oci" / "trainer"
    heavy, code = _put(root, b"torch" * 1000), _put(root, b"code")
    config = _put(root, b'{"config": {}}')
    manifest = _put(root, json.dumps({"schemaVersion": 2, "config": config, "layers": [heavy, code]}).encode())
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return built, manifest, [str(heavy["digest"]), str(code["digest"])]


def thin_archive(tmp: Path, built: Built, manifest: dict[str, object], have: set[str]) -> tuple[Path, int]:
    path = tmp / "import.tar"
    with open(path, "wb") as out:
        return path, write_thin_archive(built, manifest, have, out)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_layers_the_node_has_stay_out(layout: tuple[Built, dict[str, object], list[str]], tmp_path: Path) -> None:
    built, manifest, (heavy, code) = layout
    path, count = thin_archive(tmp_path, built, manifest, have={heavy})
    names = set(_members(path))
    assert count == 1
    assert f"blobs/{code.replace(':', '/')}" in names and f"blobs/{heavy.replace(':', '/')}" not in names
    assert f"blobs/{str(manifest['digest']).replace(':', '/')}" in names


def test_a_fresh_node_gets_every_layer_and_the_image_name(layout: tuple[Built, dict[str, object], list[str]],
                                                         tmp_path: Path) -> None:
    built, manifest, layers = layout
    path, count = thin_archive(tmp_path, built, manifest, have=set())
    members = _members(path)
    assert count == 2 and all(f"blobs/{d.replace(':', '/')}" in members for d in layers)
    index = json.loads(members["index.json"])
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == built.ref
    assert "oci-layout" in members


@pytest.mark.parametrize(("ref", "full"), [
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("kiln/trainer:dev", "docker.io/kiln/trainer:dev"),
    ("ghcr.io/kiln-dev/kiln-trainer:0.1.0", "ghcr.io/kiln-dev/kiln-trainer:0.1.0"),
    ("localhost/kiln-base-python:latest", "localhost/kiln-base-python:latest"),
])
def test_full_names(ref: str, full: str) -> None:
    assert full_name(ref) == full


def test_the_layout_serves_the_current_build_not_the_first(tmp_path: Path) -> None:
    """`buildah push oci:DIR:current` appends each build's manifest to index.json and moves the
    name; the first entry is the oldest build (the bug that imported stale code into the nodes)."""
    from kiln_devcluster.images.layout import current_manifest, keep_current

    root = tmp_path / "layout"
    entries = []
    for code in (b"old code", b"new code"):
        layer, config = _put(root, code), _put(root, code + b" config")
        entries.append(_put(root, json.dumps({"schemaVersion": 2, "config": config, "layers": [layer]}).encode()))
    old, new = entries
    named = {**new, "annotations": {"org.opencontainers.image.ref.name": "current"}}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [old, named]}))
    assert current_manifest(root)["digest"] == new["digest"]
    keep_current(root)
    assert [m["digest"] for m in json.loads((root / "index.json").read_text())["manifests"]] == [new["digest"]]
    left = {f"sha256:{p.name}" for p in (root / "blobs" / "sha256").iterdir()}
    assert str(old["digest"]) not in left and str(new["digest"]) in left
    assert len(left) == 3  # the new manifest, its config and its one layer


def test_a_layout_without_the_current_name_is_an_error_naming_it(tmp_path: Path) -> None:
    from kiln_devcluster.images.layout import current_manifest

    root = tmp_path / "layout"
    root.mkdir()
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [_put(root, b"{}")]}))
    with pytest.raises(RuntimeError, match=str(root)):
        current_manifest(root)
