from __future__ import annotations

import random

import numpy as np
from kiln_api.data_config import DedupSpec
from kiln_trainer.data import tinycorpus
from kiln_trainer.data.clean import dedup_key
from kiln_trainer.data.dedup import MinHasher, exact_hash, find_duplicates, jaccard_estimate


def _run(texts: list[str], spec: DedupSpec) -> tuple[list[bool], int, int]:
    h = MinHasher(spec)
    sigs = np.stack([h.signature(t) for t in texts])
    keep, exact, near = find_duplicates([exact_hash(dedup_key(t)) for t in texts], sigs, spec)
    return keep.tolist(), exact, near


def _edit(text: str, n_words: int, rng: random.Random) -> str:
    words = text.split()
    for i in rng.sample(range(len(words)), n_words):
        words[i] = "changed"
    return " ".join(words)


def test_planted_exact_and_near_duplicates_found_distinct_kept() -> None:
    rng = random.Random(3)
    base = [" ".join(tinycorpus.paragraph(rng, "en") for _ in range(3)) for _ in range(40)]
    texts = base + [base[5].upper(), _edit(base[9], 2, rng), _edit(base[11], 1, rng)]
    keep, exact, near = _run(texts, DedupSpec(threshold=0.8))
    assert keep[:40] == [True] * 40  # the originals (first occurrence) are kept
    assert keep[40:] == [False, False, False]
    assert (exact, near) == (1, 2)


def test_chinese_near_duplicate_without_spaces() -> None:
    rng = random.Random(4)
    base = ["".join(tinycorpus.paragraph(rng, "zh") for _ in range(3)) for _ in range(30)]
    near_copy = base[2][:40] + "忽然" + base[2][40:]
    keep, _, near = _run(base + [near_copy], DedupSpec(threshold=0.8))
    assert keep == [True] * 30 + [False]
    assert near == 1


def test_threshold_is_respected() -> None:
    spec = DedupSpec(threshold=0.9, num_perm=256, bands=32)
    h = MinHasher(spec)
    rng = random.Random(8)
    a = " ".join(tinycorpus.paragraph(rng, "en") for _ in range(4))
    b = _edit(a, 12, rng)
    est = jaccard_estimate(h.signature(a), h.signature(b))
    keep, _, near = _run([a, b], spec)
    # b is kept iff its estimated similarity is below the threshold
    assert keep[1] == (est < 0.9) and near == (0 if est < 0.9 else 1)
    keep, _, _ = _run([a, b], DedupSpec(threshold=max(0.05, est - 0.1), num_perm=256, bands=32))
    assert keep == [True, False]


def test_signatures_are_deterministic_and_seeded() -> None:
    t = "the same text every time"
    assert (MinHasher(DedupSpec()).signature(t) == MinHasher(DedupSpec()).signature(t)).all()
    assert not (MinHasher(DedupSpec(seed=2)).signature(t) == MinHasher(DedupSpec()).signature(t)).all()


def test_short_text_gets_a_signature() -> None:
    sig = MinHasher(DedupSpec(shingle_size=5)).signature("ab")
    assert sig.shape == (128,) and sig.max() < np.iinfo(np.uint32).max
