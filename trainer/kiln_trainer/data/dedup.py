"""Exact and near-duplicate detection.

Near duplicates: MinHash over shingles of k *units* — a Latin word or a single CJK character is one
unit, so Chinese needs no word segmenter and English is not cut into letters —
vectorised in numpy, then LSH banding. Documents are visited in key order and a document is dropped
when a band bucket holds an already *kept* document whose estimated Jaccard similarity is at or above
the threshold — "the first one wins", which makes the result independent of how the signatures were
computed (1 process or N shards).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xxhash
from kiln_api.data_config import DedupSpec

from kiln_trainer.data.filters import UNITS

_MULT = np.uint64(0x100000001B3)  # FNV prime: the polynomial base of the rolling shingle hash
_BLOCK = 4096  # shingles per block, bounds the num_perm x shingles temporary


class MinHasher:
    """Signatures of `num_perm` multiply-shift hash functions seeded by `seed`."""

    def __init__(self, spec: DedupSpec) -> None:
        rng = np.random.default_rng(spec.seed)
        self.k = spec.shingle_size
        self.num_perm = spec.num_perm
        self.a = (rng.integers(0, 2**63, spec.num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1))[:, None]
        self.b = rng.integers(0, 2**63, spec.num_perm, dtype=np.uint64)[:, None]

    def shingles(self, text: str) -> np.ndarray:
        """Hashes of the distinct k-unit shingles (units: words, digit runs, single CJK characters)."""
        units = UNITS.findall(text.casefold()) or [text]
        uh = np.fromiter((xxhash.xxh64_intdigest(u.encode("utf-8")) for u in units), dtype=np.uint64,
                         count=len(units))
        k = min(self.k, len(uh))
        n = len(uh) - k + 1
        h = np.zeros(n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(k):
                h = h * _MULT + uh[j:j + n]
            # finalise (xorshift-multiply) so shingles sharing units get unrelated hashes
            h ^= h >> np.uint64(29)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(32)
        return np.unique(h)

    def signature(self, text: str) -> np.ndarray:
        sh = self.shingles(text)
        sig = np.full(self.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
        with np.errstate(over="ignore"):
            for start in range(0, len(sh), _BLOCK):
                block = sh[None, start:start + _BLOCK]
                hv = ((self.a * block + self.b) >> np.uint64(32)).astype(np.uint32)
                np.minimum(sig, hv.min(axis=1), out=sig)
        return sig


def exact_hash(key_text: str) -> bytes:
    """16-byte hash of the dedup key (see clean.dedup_key)."""
    return xxhash.xxh3_128_digest(key_text.encode("utf-8"))


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a == b)) / len(a)


def find_duplicates(
    hashes: Iterable[bytes], signatures: np.ndarray, spec: DedupSpec
) -> tuple[np.ndarray, int, int]:
    """Which documents to keep (bool array, in the given order), and the exact and near drop counts."""
    n = signatures.shape[0]
    keep = np.ones(n, dtype=bool)
    exact = near = 0
    if spec.exact:
        seen: set[bytes] = set()
        for i, h in enumerate(hashes):
            if h in seen:
                keep[i] = False
                exact += 1
            else:
                seen.add(h)
    if not spec.near or n == 0:
        return keep, exact, near
    rows = spec.num_perm // spec.bands
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(spec.bands)]
    for i in range(n):
        if not keep[i]:
            continue
        sig = signatures[i]
        keys = [sig[b * rows:(b + 1) * rows].tobytes() for b in range(spec.bands)]
        checked: set[int] = set()
        dup = False
        for b, key in enumerate(keys):
            for j in buckets[b].get(key, ()):
                if j not in checked:
                    checked.add(j)
                    if jaccard_estimate(sig, signatures[j]) >= spec.threshold:
                        dup = True
                        break
            if dup:
                break
        if dup:
            keep[i] = False
            near += 1
            continue
        for b, key in enumerate(keys):
            buckets[b].setdefault(key, []).append(i)
    return keep, exact, near
