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
    rng = random.Random(8)
    a = " ".join(tinycorpus.paragraph(rng, "en") for _ in range(4))
    b = _edit(a, 4, rng)
    est = jaccard_estimate(MinHasher(DedupSpec(num_perm=256, bands=32)).signature(a),
                           MinHasher(DedupSpec(num_perm=256, bands=32)).signature(b))
    assert 0.6 < est < 0.95  # a near duplicate, not a copy
    keep, _, near = _run([a, b], DedupSpec(threshold=est + 0.02, num_perm=256, bands=32))
    assert keep == [True, True] and near == 0  # just below the threshold: kept
    keep, _, near = _run([a, b], DedupSpec(threshold=est - 0.05, num_perm=256, bands=32))
    assert keep == [True, False] and near == 1  # at/above the threshold: dropped


def test_signatures_are_deterministic_and_seeded() -> None:
    t = "the same text every time"
    assert (MinHasher(DedupSpec()).signature(t) == MinHasher(DedupSpec()).signature(t)).all()
    assert not (MinHasher(DedupSpec(seed=2)).signature(t) == MinHasher(DedupSpec()).signature(t)).all()


def test_short_text_gets_a_signature() -> None:
    sig = MinHasher(DedupSpec(shingle_size=5)).signature("ab")
    assert sig.shape == (128,) and sig.max() < np.iinfo(np.uint32).max
