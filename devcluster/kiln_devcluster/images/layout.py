"""The OCI layout each image is exported to (in the cache), written from buildah's store.

One layout per image name, holding one manifest (named `current`), its config and its layers,
gzip-compressed as a registry would store them: the content stores of the nodes' containerd link
to these very files (share.py), so compressed blobs keep the cache and every node small.

A layer is compressed once: ``diffids.json`` maps each layer's uncompressed digest (diff id) to
the blob it was compressed to, so an unchanged layer (torch's) is reused as is and a code change
compresses only the thin code layer. `buildah push` (Debian 12's 1.28) would recompress every
layer on every push.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import IO

from kiln_devcluster.images.storage import Layer, Store

REF_ANNOTATION = "org.opencontainers.image.ref.name"
CURRENT = "current"
"""The layout's only ref (an older kiln's `buildah push` left earlier builds' manifests beside it)."""
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
GZIP_LEVEL = 1
"""Fast: a layer is written once and read from local disk; size matters less than time here."""


def blob_path(layout: Path, digest: str) -> Path:
    algo, _, hexd = digest.partition(":")
    return layout / "blobs" / algo / hexd


class _Hashing:
    """A file writer that also counts and hashes what passes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _compress(store: Store, layer: Layer, layout: Path) -> dict[str, object]:
    """Write the layer gzipped into the layout; returns its blob descriptor."""
    tmp = layout / "blobs" / "sha256" / f".partial-{layer.digest[7:]}"
    try:
        with open(tmp, "wb") as raw:
            hashing = _Hashing(raw)
            with gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as gz:
                store.write_layer(layer, gz)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    digest = f"sha256:{hashing.sha.hexdigest()}"
    os.replace(tmp, blob_path(layout, digest))
    return {"mediaType": LAYER_TYPE, "digest": digest, "size": hashing.size}


def write_layout(store: Store, image_id: str, layout: Path) -> None:
    """Make the image the layout's `current` manifest, compressing only the layers it lacks."""
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    config = store.config(image_id)
    layers = store.layers(image_id)
    if json.loads(config)["rootfs"]["diff_ids"] != [la.digest for la in layers]:
        raise RuntimeError(f"image {image_id}: its config's diff_ids do not match its layers in the store")
    known_file = layout / "diffids.json"
    known: dict[str, dict[str, object]] = json.loads(known_file.read_text()) if known_file.exists() else {}
    descriptors, written = [], 0
    for la in layers:
        have = known.get(la.digest)
        if not (have and blob_path(layout, str(have["digest"])).exists()):
            have = known[la.digest] = _compress(store, la, layout)
            written += 1
        descriptors.append(have)
    known_file.write_text(json.dumps(known))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": f"sha256:{image_id}", "size": len(config)},
        "layers": descriptors,
    }).encode()
    for data in (config, manifest):
        blob_path(layout, "sha256:" + hashlib.sha256(data).hexdigest()).write_bytes(data)
    descriptor = {"mediaType": MANIFEST_TYPE, "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
                  "size": len(manifest), "annotations": {REF_ANNOTATION: CURRENT}}
    tmp = layout / "index.json.tmp"
    tmp.write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    os.replace(tmp, layout / "index.json")
    print(f"[images]   {written} of {len(layers)} layer(s) compressed into {layout}", flush=True)


def current_manifest(layout: Path) -> dict[str, object]:
    """The descriptor named `current` in the layout's index (an error naming the layout if none is)."""
    index = json.loads((layout / "index.json").read_text())
    for m in index["manifests"]:
        if (m.get("annotations") or {}).get(REF_ANNOTATION) == CURRENT:
            descriptor: dict[str, object] = m
            return descriptor
    raise RuntimeError(f"{layout}/index.json names no manifest '{CURRENT}'; remove {layout} to re-export")


def keep_current(layout: Path) -> None:
    """Drop the manifests of earlier builds from the index, then every blob (and diff id record)
    the current manifest does not name: an earlier build's code layer."""
    current = current_manifest(layout)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"] = [current]
    (layout / "index.json").write_text(json.dumps(index))
    manifest = json.loads(blob_path(layout, str(current["digest"])).read_text())
    keep = {current["digest"], manifest["config"]["digest"], *(la["digest"] for la in manifest["layers"])}
    for blob in (layout / "blobs" / "sha256").iterdir():
        if f"sha256:{blob.name}" not in keep:
            blob.unlink()
    known_file = layout / "diffids.json"
    if known_file.exists():
        known = json.loads(known_file.read_text())
        known_file.write_text(json.dumps({k: v for k, v in known.items() if v["digest"] in keep}))
