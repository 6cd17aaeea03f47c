"""Encoding documents in parallel and packing them into fixed-dtype shards with an index.

Encoding runs in a process pool over chunks of documents with `imap` (order preserving), so the token
stream is the same for 1 or N workers. Each split first goes into one local spool file; the train
spool is then cut at document boundaries into `num_shards` files of about equal token counts.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash

from kiln_trainer.data.tokenizer import EOS_ID
from kiln_trainer.data.wordcache import WordCachedEncoder

_ENC: WordCachedEncoder | None = None


def _init_worker(model_path: str, dtype: str) -> None:
    global _ENC, _DTYPE
    _ENC = WordCachedEncoder(model_path)
    _DTYPE = np.dtype(dtype).newbyteorder("<")


_DTYPE = np.dtype("<u4")


def _encode_chunk(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All documents of a chunk as one array of the shard dtype (EOS after each) plus their lengths.
    Converted here, in the worker, so the parent only writes bytes (and half as many cross the pipe)."""
    assert _ENC is not None  # set by _init_worker
    return _ENC.encode_packed(texts, _DTYPE, EOS_ID)


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for t in texts:
        chunk.append(t)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def encode_all(texts: Iterable[str], model_path: Path, workers: int, dtype: str = "uint32",
               chunk: int = 128) -> Iterator[np.ndarray]:
    """Token arrays of `dtype` (EOS appended), one per input text, in input order.

    `workers` counts this process too: it reads the documents and writes the spools, so the pool
    gets workers - 1 processes, and with 2 or fewer there is no pool (measured on 2 cores: a pool
    of 2 beside the busy parent was no faster than encoding in-process, and slower on small inputs
    where each worker warms its own word cache)."""
    chunks = _chunks(texts, chunk)
    workers -= 1
    if workers <= 1:
        _init_worker(str(model_path), dtype)
        results: Iterable[tuple[np.ndarray, np.ndarray]] = map(_encode_chunk, chunks)
        pool = None
    else:
        pool = mp.get_context("fork").Pool(workers, initializer=_init_worker,
                                            initargs=(str(model_path), dtype))
        results = pool.imap(_encode_chunk, chunks, chunksize=1)
    try:
        for flat, lengths in results:
            start = 0
            for n in lengths:
                yield flat[start:start + n]
                start += int(n)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def is_val(seed: int, key: tuple[int, int], fraction: float) -> bool:
    """Seeded, per-document train/validation assignment."""
    u = xxhash.xxh64_intdigest(f"{seed}:{key[0]}:{key[1]}".encode()) / 2**64
    return u < fraction


@dataclass
class Spool:
    """A split's tokens as written so far (one local file) and its document lengths."""

    path: Path
    dtype: str
    lengths: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, tokens: np.ndarray, copies: int = 1) -> None:
        data = tokens.astype(np.dtype(self.dtype).newbyteorder("<"), copy=False).tobytes()
        for _ in range(copies):
            self._f.write(data)
            self.lengths.append(len(tokens))

    def close(self) -> None:
        self._f.close()

    @property
    def tokens(self) -> int:
        return int(sum(self.lengths))


def cut_shards(spool: Spool, prefix: str, num_shards: int, out_dir: Path) -> list[tuple[str, Path, Path, int, int]]:
    """Split a spool at document boundaries into shards; returns (name, bin, idx, tokens, documents)."""
    lengths = np.asarray(spool.lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    total = int(starts[-1])
    itemsize = np.dtype(spool.dtype).itemsize
    # shard j starts at the first document starting at or after j/num_shards of the tokens
    bounds = [0] + [int(np.searchsorted(starts[:-1], total * j / num_shards)) for j in range(1, num_shards)]
    bounds.append(len(lengths))
    out: list[tuple[str, Path, Path, int, int]] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(spool.path, "rb") as src:
        for j in range(num_shards):
            d0, d1 = bounds[j], max(bounds[j], bounds[j + 1])
            t0, t1 = int(starts[d0]), int(starts[d1])
            name = f"{prefix}-{j:05d}"
            bin_path, idx_path = out_dir / f"{name}.bin", out_dir / f"{name}.idx"
            src.seek(t0 * itemsize)
            with open(bin_path, "wb") as dst:
                remaining = (t1 - t0) * itemsize
                while remaining:
                    block = src.read(min(remaining, 1 << 24))
                    dst.write(block)
                    remaining -= len(block)
            with open(idx_path, "wb") as f:
                np.save(f, (starts[d0:d1 + 1] - t0).astype(np.int64), allow_pickle=False)
            out.append((name, bin_path, idx_path, t1 - t0, d1 - d0))
    return out
