"""The global half of prepare: dedup over all parts → tokenizer on a sample → encode → shards.

Everything is ordered by document key, so the output depends only on the inputs and the spec, never
on the number of shards or workers.
"""

from __future__ import annotations

import heapq
import json
import os
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
from kiln_api.data_config import DataSpec
from tqdm import tqdm

from kiln_trainer.data.dedup import find_duplicates
from kiln_trainer.data.inspect import SAMPLES, CoverageTally, write_samples
from kiln_trainer.data.manifest import shard_entry, token_dtype
from kiln_trainer.data.pack import Spool, cut_shards, encode_all, is_val
from kiln_trainer.data.parts import iter_part_docs
from kiln_trainer.data.report import Report
from kiln_trainer.data.tokenizer import TokenizerInfo, train_tokenizer


class EmptyDataset(ValueError):
    """Nothing survived reading, filtering and dedup."""


@dataclass
class Merged:
    """Local results of the merge, ready to upload."""

    tokenizer: TokenizerInfo
    tokenizer_path: Path
    shards: list[dict[str, Any]]
    files: dict[str, Path]


def _load_index(parts: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    keys, hashes, sigs, lines = [], [], [], []
    for p in parts:
        with np.load(p / "index.npz", allow_pickle=False) as z:
            keys.append(z["keys"])
            hashes.append(z["hashes"])
            sigs.append(z["sigs"])
            lines.append(z["lines"])
    k, h, s, n = (np.concatenate(x) for x in (keys, hashes, sigs, lines))
    order = np.lexsort((k[:, 1], k[:, 0]))
    return k[order], h[order], s[order], n[order]


def _kept_docs(parts: list[Path], kept: set[tuple[int, int]]) -> Iterator[dict[str, Any]]:
    """Kept documents of all parts in key order (each part is already sorted)."""
    streams = [iter_part_docs(p) for p in parts]
    for doc in heapq.merge(*streams, key=lambda d: (d["k"][0], d["k"][1])):
        if (doc["k"][0], doc["k"][1]) in kept:
            yield doc


MAX_LINE = 4000  # characters; SentencePiece skips longer training lines (max_sentence_length is bytes)


def _pieces(line: str) -> Iterator[str]:
    """A training line, cut into pieces SentencePiece will not skip (Chinese paragraphs can be long)."""
    for start in range(0, len(line), MAX_LINE):
        yield line[start:start + MAX_LINE]


def _sample_lines(docs: Iterator[dict[str, Any]], total_lines: int, spec: DataSpec, out: Path) -> int:
    """Write a seeded sample of at most ~input_sentence_size lines for tokenizer training."""
    p = min(1.0, spec.tokenizer.input_sentence_size / max(1, total_lines))
    seed = spec.tokenizer.seed
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for d in docs:
            for i, line in enumerate(ln for ln in d["t"].split("\n") if ln.strip()):
                if p >= 1.0 or xxhash.xxh64_intdigest(f"{seed}:{d['k'][0]}:{d['k'][1]}:{i}".encode()) / 2**64 < p:
                    for piece in _pieces(line):
                        f.write(piece + "\n")
                        n += 1
    return n


def _val_keys(keys: list[tuple[int, int]], spec: DataSpec) -> set[tuple[int, int]]:
    frac, seed = spec.packing.val_fraction, spec.packing.seed
    val = {k for k in keys if is_val(seed, k, frac)}
    if frac > 0 and not val and len(keys) >= 2:
        # a tiny corpus may draw no validation document: take the one with the smallest draw
        val = {min(keys, key=lambda k: xxhash.xxh64_intdigest(f"{seed}:{k[0]}:{k[1]}".encode()))}
    return val


def _dedup(parts: list[Path], spec: DataSpec, rep: Report) -> tuple[list[tuple[int, int]], int]:
    """Keys of the documents that survive dedup (in key order) and their number of text lines."""
    keys, hashes, sigs, lines = _load_index(parts)
    keep, exact, near = find_duplicates((bytes(h) for h in hashes), sigs, spec.dedup)
    rep.add("dedup", "docs_in", len(keys))
    rep.add("dedup", "exact_dropped", exact)
    rep.add("dedup", "near_dropped", near)
    rep.add("dedup", "kept", int(keep.sum()))
    kept = [(int(a), int(b)) for a, b in keys[keep]]
    if not kept:
        raise EmptyDataset(f"no documents left to tokenize: {json.dumps(rep.counts)}")
    return kept, int(lines[keep].sum())


def _encode_into(parts: list[Path], kept: set[tuple[int, int]], val_keys: set[tuple[int, int]], model: Path,
                 workers: int, spools: dict[str, Spool], rep: Report, tally: CoverageTally) -> None:
    """Stream the kept documents through the encoder pool into the train/val spools."""
    meta: deque[tuple[tuple[int, int], int, str]] = deque()

    def texts() -> Iterator[str]:
        for d in _kept_docs(parts, kept):
            meta.append(((d["k"][0], d["k"][1]), d["c"], d["d"]))
            tally.add_text(d["t"])
            yield d["t"]

    bar = tqdm(total=len(kept), desc="encode+pack", unit="doc", disable=None)
    for toks in encode_all(texts(), model, workers, spools["train"].dtype):
        key, copies, domain = meta.popleft()  # encode_all keeps input order
        split = "val" if key in val_keys else "train"
        spools[split].write(toks, copies)
        tally.add_tokens(toks, copies)
        rep.add("tokens", split, len(toks) * copies)
        rep.add("tokens_by_domain", domain, len(toks) * copies)
        rep.add("documents_by_domain", domain, copies)
        bar.update(1)
    bar.close()
    for s in spools.values():
        s.close()


def _say(msg: str) -> None:
    print(f"[prepare] {msg}", file=sys.stderr, flush=True)


def merge_parts(parts: list[Path], spec: DataSpec, workers: int, work: Path, rep: Report) -> Merged:
    with rep.timed("dedup"):
        kept_list, total_lines = _dedup(parts, spec, rep)
    _say(f"dedup: {rep.get('dedup', 'docs_in')} documents in, {len(kept_list)} kept "
         f"({rep.get('dedup', 'exact_dropped')} exact, {rep.get('dedup', 'near_dropped')} near duplicates)")
    kept = set(kept_list)
    with rep.timed("tokenizer"):
        sample = work / "tokenizer-lines.txt"
        n_lines = _sample_lines(_kept_docs(parts, kept), total_lines, spec, sample)
        rep.add("tokenizer", "training_lines", n_lines)
        _say(f"tokenizer: SentencePiece BPE, vocab {spec.tokenizer.vocab_size}, on {n_lines} sampled lines")
        info = train_tokenizer(sample, work / "tokenizer", spec.tokenizer, workers)
        sample.unlink()
    spools = {s: Spool(work / f"{s}.spool", token_dtype(info.vocab_size)) for s in ("train", "val")}
    tally = CoverageTally(work / "tokenizer.model")
    with rep.timed("encode_pack"):
        _encode_into(parts, kept, _val_keys(kept_list, spec), work / "tokenizer.model", workers, spools, rep, tally)
        if not spools["train"].lengths:
            raise EmptyDataset(f"data.packing.val_fraction: every one of the {len(kept)} documents went to "
                               "validation; add data or lower val_fraction")
        shards: list[dict[str, Any]] = []
        files: dict[str, Path] = {}
        for split, count in (("train", spec.packing.num_shards), ("val", 1)):
            if spools[split].lengths:
                for name, bin_path, idx_path, tokens, ndocs in cut_shards(spools[split], split, count, work / "shards"):
                    shards.append(shard_entry(name, split, bin_path, idx_path, tokens, ndocs))
                    files[f"shards/{name}.bin"] = bin_path
                    files[f"shards/{name}.idx"] = idx_path
            os.unlink(spools[split].path)
    rep.extra["tokenizer_coverage"] = tally.summary()
    train = [(s["name"], files[f"shards/{s['name']}.bin"], files[f"shards/{s['name']}.idx"])
             for s in shards if s["split"] == "train"]
    write_samples(train, token_dtype(info.vocab_size), work / "tokenizer.model", work / SAMPLES)
    files[SAMPLES] = work / SAMPLES
    return Merged(info, work / "tokenizer.model", shards, files)
