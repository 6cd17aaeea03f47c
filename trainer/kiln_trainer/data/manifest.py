"""The dataset manifest: what the trainer trusts about a prepared dataset.

Contract (format_version 1), all under ``<root>/datasets/<data-hash>/``:

- ``tokenizer.model``: SentencePiece model; ids pad 0, unk 1, bos 2, eos 3, mask 4.
- ``shards/train-00000.bin`` … and ``shards/val-00000.bin``: flat little-endian token ids, ``uint16``
  when the vocabulary has fewer than 65,536 pieces, else ``uint32``; documents concatenated, EOS after
  each one.
- ``shards/<name>.idx``: ``.npy`` int64 array of document start offsets (in tokens), with the shard's
  token count appended, so document ``i`` is ``tokens[idx[i]:idx[i+1]]``.
- ``manifest.json``: ``{format_version, data_hash, spec_hash, tokenizer: {vocab_size, sha256, bos_id,
  eos_id, pad_id, unk_id, mask_id}, dtype, shards: [{name, split, tokens, documents, sha256, bytes,
  idx_sha256}], totals: {<split>: {tokens, documents}}, created_at}``. It is written last, with a
  conditional put: its presence means the dataset is complete.
- ``report.json``: the prepare report (see report.py), with ``tokenizer_coverage`` (see inspect.py).
- ``samples.jsonl``: decoded text of documents spread over the train shards (see inspect.py); it is
  for people (``kiln data sample``), the trainer never reads it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REPORT = "report.json"
TOKENIZER = "tokenizer.model"


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size < 65536 else "uint32"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shard_entry(name: str, split: str, bin_path: Path, idx_path: Path, tokens: int, documents: int) -> dict[str, Any]:
    return {
        "name": name, "split": split, "tokens": tokens, "documents": documents,
        "sha256": sha256_file(bin_path), "bytes": bin_path.stat().st_size, "idx_sha256": sha256_file(idx_path),
    }


def build_manifest(data_hash: str, spec_hash: str, tokenizer: dict[str, Any], shards: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, dict[str, int]] = {}
    for s in shards:
        t = totals.setdefault(s["split"], {"tokens": 0, "documents": 0})
        t["tokens"] += s["tokens"]
        t["documents"] += s["documents"]
    return {
        "format_version": FORMAT_VERSION,
        "data_hash": data_hash,
        "spec_hash": spec_hash,
        "tokenizer": tokenizer,
        "dtype": token_dtype(tokenizer["vocab_size"]),
        "shards": shards,
        "totals": totals,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class ManifestError(ValueError):
    """A manifest the reader cannot use; the message names the field."""


def parse_manifest(raw: bytes | str) -> dict[str, Any]:
    m = json.loads(raw)
    if not isinstance(m, dict):
        raise ManifestError("manifest: not a JSON object")
    if m.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"manifest.format_version: expected {FORMAT_VERSION}, got {m.get('format_version')!r}")
    for key in ("data_hash", "tokenizer", "dtype", "shards", "totals"):
        if key not in m:
            raise ManifestError(f"manifest.{key}: missing")
    if m["dtype"] not in ("uint16", "uint32"):
        raise ManifestError(f"manifest.dtype: must be uint16 or uint32, got {m['dtype']!r}")
    for i, s in enumerate(m["shards"]):
        for key in ("name", "split", "tokens", "documents", "sha256", "bytes"):
            if key not in s:
                raise ManifestError(f"manifest.shards[{i}].{key}: missing")
    return m
