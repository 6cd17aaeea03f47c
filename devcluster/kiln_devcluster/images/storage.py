"""Read a built image straight from buildah's store (containers/storage, overlay driver).

`buildah push` (1.28, Debian 12's) rewrites and gzips every layer on every push, even with
`--disable-compression` and even when the destination holds the blob: minutes of CPU and I/O
for the trainer's 6 GB after a one-line code change. The store already holds all an OCI layout
needs, so the export reads it instead (read-only):

- ``overlay-images/images.json``: the image's top layer; ``overlay-images/<id>/=<base64 key>``:
  its config, stored under the key ``sha256:<image id>`` (the id is the config's digest);
- ``overlay-layers/layers.json``: each layer's parent, uncompressed digest and size;
- ``overlay-layers/<layer>.tar-split.gz``: the layer's tar headers and padding, byte for byte,
  with the file contents left out; ``overlay/<layer>/diff/`` holds those contents. Replaying the
  one with the other gives the very tar the layer was made from, so its digest is the layer's
  uncompressed digest (checked while writing).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kiln_devcluster.images.progress import run

SEGMENT, FILE = 2, 1
"""tar-split entry types: raw tar bytes (headers, padding) and a file's contents by name."""


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class Layer:
    id: str
    digest: str
    """``sha256:…`` of the uncompressed tar (the diff id)."""
    size: int


class Store:
    """One containers/storage root with the overlay driver (buildah's, by default)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def buildah(cls) -> Store:
        info = json.loads(run(["buildah", "info"]))
        store = info["store"]
        if store.get("GraphDriverName") != "overlay":
            raise RuntimeError(f"buildah's store uses the {store.get('GraphDriverName')!r} driver; the export reads overlay only")
        return cls(Path(store["GraphRoot"]))

    def _records(self, kind: str) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in json.loads((self.root / f"overlay-{kind}" / f"{kind}.json").read_text())}

    def config(self, image_id: str) -> bytes:
        """The image's config blob (its digest is the image id)."""
        key = base64.b64encode(f"sha256:{image_id}".encode()).decode()
        data = (self.root / "overlay-images" / image_id / f"={key}").read_bytes()
        if hashlib.sha256(data).hexdigest() != image_id:
            raise RuntimeError(f"the stored config of image {image_id} does not hash to its id")
        return data

    def layers(self, image_id: str) -> list[Layer]:
        """The image's layers, bottom first."""
        images, layers = self._records("images"), self._records("layers")
        if image_id not in images:
            raise RuntimeError(f"image {image_id} is not in {self.root}")
        chain, top = [], images[image_id].get("layer")
        while top:
            rec = layers[top]
            chain.append(Layer(rec["id"], rec["diff-digest"], int(rec["diff-size"])))
            top = rec.get("parent")
        return chain[::-1]

    def write_layer(self, layer: Layer, out: Sink) -> None:
        """Write the layer's uncompressed tar to `out`; raises if it does not hash to its digest."""
        digest, size = hashlib.sha256(), 0
        diff = self.root / "overlay" / layer.id / "diff"
        with gzip.open(self.root / "overlay-layers" / f"{layer.id}.tar-split.gz", "rt") as entries:
            for line in entries:
                for chunk in _entry_bytes(json.loads(line), diff):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        if f"sha256:{digest.hexdigest()}" != layer.digest or size != layer.size:
            raise RuntimeError(f"layer {layer.id} replayed to {size} bytes that do not hash to {layer.digest}")


def _entry_bytes(entry: dict[str, Any], diff: Path) -> Iterator[bytes]:
    """The bytes one tar-split entry stands for: its raw segment, or its file's contents."""
    if entry["type"] == SEGMENT:
        yield base64.b64decode(entry.get("payload") or "")
    elif entry["type"] == FILE and entry.get("size"):
        name = entry.get("name") or os.fsdecode(base64.b64decode(entry["name_raw"]))
        left = int(entry["size"])
        with open(diff / name.lstrip("/"), "rb") as src:
            while left:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    raise RuntimeError(f"{diff / name} is shorter than its tar entry")
                left -= len(chunk)
                yield chunk
