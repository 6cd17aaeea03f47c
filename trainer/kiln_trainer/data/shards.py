"""Reading a prepared dataset: memory-mapped token shards, verified against the manifest.

    ds = open_dataset("s3://kiln/team-a/datasets/3f2a...")   # or a local folder / file:// URI
    ds.tokens("train")        # list of np.memmap, one per train shard
    ds.documents("val")       # list of int64 offset arrays (documents i = tokens[o[i]:o[i+1]])
    ds.tokenizer_path         # local path of tokenizer.model

Remote datasets are downloaded once into a cache folder (``$KILN_CACHE`` or ``~/.cache/kiln``). On
open every shard and index is checked against the manifest's size and sha256; a mismatch raises
`CorruptShard` naming the shard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kiln_api import contract

from kiln_trainer.data.manifest import MANIFEST, TOKENIZER, parse_manifest, sha256_file


class CorruptShard(RuntimeError):
    """A shard or index whose bytes do not match the manifest."""


@dataclass
class Dataset:
    """An opened dataset folder."""

    path: Path
    manifest: dict[str, Any]

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.manifest["dtype"]).newbyteorder("<")

    def shard_names(self, split: str) -> list[str]:
        names = [s["name"] for s in self.manifest["shards"] if s["split"] == split]
        if not names:
            splits = sorted({s["split"] for s in self.manifest["shards"]})
            raise KeyError(f"split {split!r} not in dataset {self.path} (splits: {', '.join(splits)})")
        return names

    def tokens(self, split: str) -> list[np.memmap]:
        return [np.memmap(self.path / "shards" / f"{n}.bin", dtype=self.dtype, mode="r") for n in self.shard_names(split)]

    def documents(self, split: str) -> list[np.ndarray]:
        return [np.load(self.path / "shards" / f"{n}.idx", allow_pickle=False) for n in self.shard_names(split)]

    def num_tokens(self, split: str) -> int:
        return int(self.manifest["totals"].get(split, {}).get("tokens", 0))


def _verify(path: Path, manifest: dict[str, Any]) -> None:
    tok = path / TOKENIZER
    if not tok.is_file() or sha256_file(tok) != manifest["tokenizer"]["sha256"]:
        raise CorruptShard(f"{tok}: tokenizer.model missing or its sha256 differs from the manifest")
    for s in manifest["shards"]:
        bin_path = path / "shards" / f"{s['name']}.bin"
        if not bin_path.is_file():
            raise CorruptShard(f"shard {s['name']}: {bin_path} is missing")
        if bin_path.stat().st_size != s["bytes"] or sha256_file(bin_path) != s["sha256"]:
            raise CorruptShard(f"shard {s['name']}: {bin_path} does not match the manifest sha256/size (corrupt)")
        idx_path = path / "shards" / f"{s['name']}.idx"
        if "idx_sha256" in s and (not idx_path.is_file() or sha256_file(idx_path) != s["idx_sha256"]):
            raise CorruptShard(f"shard {s['name']}: index {idx_path} missing or corrupt")


def _download(uri: str, cache: Path) -> Path:
    from kiln_trainer.storage import open_store

    store = open_store(uri)
    manifest_bytes = store.get_bytes(MANIFEST)
    m = parse_manifest(manifest_bytes)
    local = cache / m["data_hash"]
    if not (local / MANIFEST).is_file():
        for key in [TOKENIZER] + [f"shards/{s['name']}{ext}" for s in m["shards"] for ext in (".bin", ".idx")]:
            store.get_file(key, local / key)
        (local / MANIFEST).write_bytes(manifest_bytes)  # last: its presence marks a complete copy
    return local


def open_dataset(where: str | Path, *, verify: bool = True, cache_dir: str | Path | None = None) -> Dataset:
    """Open a dataset folder (local path, file:// or s3:// URI of `<root>/datasets/<hash>`)."""
    text = str(where)
    if text.startswith("s3://"):
        cache = Path(cache_dir or os.environ.get(contract.ENV_CACHE) or Path.home() / ".cache" / "kiln") / "datasets"
        path = _download(text, cache)
    else:
        path = Path(text[len("file://"):] if text.startswith("file://") else text)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no manifest; the dataset was not prepared (or not completely)")
    m = parse_manifest(manifest_path.read_bytes())
    if verify:
        _verify(path, m)
    return Dataset(path, m)
