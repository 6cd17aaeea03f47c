"""The per-shard half of prepare: read → sample by weight → clean → filter → hash, for a slice of files.

Shard I of N takes the files whose global index is I mod N. Its output, a *part*, holds every kept
document in key order (key = file index, record index) plus its exact hash and MinHash signature:

    parts/part-0000I/docs.jsonl.zst   {"k": [file, record], "c": copies, "d": domain, "t": text}
    parts/part-0000I/index.npz        keys (n,2) int64, hashes (n,16) uint8, sigs (n,num_perm) uint32,
                                      lines (n,) int64
    parts/part-0000I/report.json      counts of this shard
    parts/part-0000I/done.json        written last: {index, num_shards, docs}

Dedup is *not* done here: the merge sees all signatures in key order, so 1 process and N shards
produce the same result.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
import zstandard
from kiln_api.data_config import DataSpec
from tqdm import tqdm

from kiln_trainer.data.clean import clean_text, dedup_key
from kiln_trainer.data.dedup import MinHasher, exact_hash
from kiln_trainer.data.filters import check_date, check_quality
from kiln_trainer.data.report import Report
from kiln_trainer.data.sources import InputFile, SkipFile, read_docs

_SPEC: DataSpec | None = None
_HASHER: MinHasher | None = None


@dataclass
class Doc:
    """A kept document with what the merge needs."""

    key: tuple[int, int]
    copies: int
    domain: str
    text: str
    hash: bytes
    sig: np.ndarray
    lines: int


def copies_for(seed: int, uri: str, record: int, weight: float) -> int:
    """How many times a document enters the dataset under its source weight (seeded, per document)."""
    whole, frac = math.floor(weight), weight - math.floor(weight)
    u = xxhash.xxh64_intdigest(f"{seed}:{uri}:{record}".encode()) / 2**64
    return whole + (1 if u < frac else 0)


def _init(spec: DataSpec) -> None:
    global _SPEC, _HASHER
    _SPEC = spec
    _HASHER = MinHasher(spec.dedup)


def process_file(f: InputFile) -> tuple[list[Doc], Report]:
    """Read, sample, clean, filter and hash one file (runs in a worker process)."""
    assert _SPEC is not None and _HASHER is not None  # set by _init
    spec, src = _SPEC, _SPEC.sources[f.source_index]
    rep = Report()
    docs: list[Doc] = []
    skips: dict[str, int] = {}
    try:
        for raw in read_docs(f, src, skips):
            rep.add("input", "docs_read")
            copies = copies_for(spec.sample_seed, f.uri, raw.record, src.weight)
            if copies == 0:
                rep.add("sampling", "sampled_out")
                continue
            text = clean_text(raw.text, spec.clean, rep)
            reason = check_date(raw.date, spec.filters) or check_quality(text, spec.filters)
            if reason:
                rep.add("filters", reason)
                continue
            rep.add("filters", "kept")
            lines = sum(1 for ln in text.split("\n") if ln.strip())
            docs.append(Doc((f.index, raw.record), copies, src.domain, text,
                            exact_hash(dedup_key(text)), _HASHER.signature(text), lines))
    except SkipFile as e:
        # the whole file is skipped, also when it broke after some documents: count only the skip
        rep = Report()
        rep.add("input", f"files_skipped:{e.reason}")
        rep.extra["skipped_files"] = [str(e)]
        return [], rep
    rep.add("input", "files_read")
    for reason, n in skips.items():
        rep.add("input", f"records_skipped:{reason}", n)
    return docs, rep


def _results(files: list[InputFile], spec: DataSpec, workers: int) -> Iterator[tuple[list[Doc], Report]]:
    if workers <= 1 or len(files) <= 1:
        _init(spec)
        yield from map(process_file, files)
        return
    with mp.get_context("fork").Pool(min(workers, len(files)), initializer=_init, initargs=(spec,)) as pool:
        yield from pool.imap(process_file, files, chunksize=1)


def build_part(files: list[InputFile], spec: DataSpec, workers: int, out_dir: Path, index: int, num_shards: int) -> Report:
    """Process this shard's files and write the part into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = Report()
    keys: list[tuple[int, int]] = []
    hashes: list[bytes] = []
    sigs: list[np.ndarray] = []
    lines: list[int] = []
    skipped: list[str] = []
    cctx = zstandard.ZstdCompressor(level=3)
    with rep.timed("read_clean_filter"), open(out_dir / "docs.jsonl.zst", "wb") as raw_out, \
            cctx.stream_writer(raw_out) as out:
        bar = tqdm(_results(files, spec, workers), total=len(files), desc=f"part {index}: read+clean", unit="file",
                   disable=None)
        for docs, file_rep in bar:
            rep.merge(file_rep)
            skipped.extend(file_rep.extra.get("skipped_files", []))
            for d in docs:
                out.write((json.dumps({"k": list(d.key), "c": d.copies, "d": d.domain, "t": d.text},
                                      ensure_ascii=False) + "\n").encode("utf-8"))
                keys.append(d.key)
                hashes.append(d.hash)
                sigs.append(d.sig)
                lines.append(d.lines)
    buf = io.BytesIO()
    np.savez(buf,
             keys=np.asarray(keys, dtype=np.int64).reshape(-1, 2),
             hashes=np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(-1, 16),
             sigs=np.asarray(sigs, dtype=np.uint32).reshape(-1, spec.dedup.num_perm),
             lines=np.asarray(lines, dtype=np.int64))
    (out_dir / "index.npz").write_bytes(buf.getvalue())
    rep.extra["skipped_files"] = skipped
    (out_dir / "report.json").write_text(json.dumps({**rep.to_dict()}, indent=1))
    (out_dir / "done.json").write_text(json.dumps({"index": index, "num_shards": num_shards, "docs": len(keys)}))
    return rep


def iter_part_docs(part_dir: Path) -> Iterator[dict[str, Any]]:
    """The documents of a part, in key order."""
    with open(part_dir / "docs.jsonl.zst", "rb") as f:
        reader = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8")
        for line in reader:
            yield json.loads(line)
