"""Prepare on dirty Chinese text: cleaning counts, tokenizer coverage and samples in the dataset folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from dirtycorpus import prepare_dirty
from kiln_trainer.data.shards import open_dataset
from kiln_trainer.data.tokenizer import EOS_ID, load

IDEOGRAPH = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
DIRT = re.compile(r"\x1b|\[\d*m|^\.[A-Z]{1,2}\b|\\f[BIRP]|\[\[|\{\{|'''|^#+ |\*\*|<p>|&nbsp;|var shown", re.M)


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_dirty(tmp_path_factory.mktemp("dirty"))


def _decoded_docs(ds_dir: Path) -> list[str]:
    ds = open_dataset(ds_dir)
    sp = load(ds.tokenizer_path)
    out = []
    for split in ("train", "val"):
        for toks, idx in zip(ds.tokens(split), ds.documents(split), strict=True):
            out += [sp.decode([int(t) for t in toks[idx[i]:idx[i + 1]] if t != EOS_ID]) for i in range(len(idx) - 1)]
    return out


def test_every_cleaning_step_is_counted(dirty: Path) -> None:
    counts = json.loads((dirty / "report.json").read_text())["counts"]
    for step in ("terminal", "roff", "wiki", "markdown", "html", "cjk_lines"):
        assert counts["clean_docs"][step] >= 10, step
        assert counts["clean_chars_removed"][step] >= counts["clean_docs"][step], step
    assert not [d for d in _decoded_docs(dirty) if DIRT.search(d)]


def test_tokenizer_coverage_matches_a_count_over_the_shards(dirty: Path) -> None:
    cov = json.loads((dirty / "report.json").read_text())["tokenizer_coverage"]
    sp = load(dirty / "tokenizer.model")
    chars = [c for d in _decoded_docs(dirty) for c in IDEOGRAPH.findall(d)]
    fallback = [c for c in chars if any(sp.is_byte(i) for i in sp.encode(c))]
    assert cov["cjk_chars"] == len(chars) and cov["cjk_distinct"] == len(set(chars))
    assert cov["cjk_byte_fallback_chars"] == len(fallback) > 0  # coverage 0.98 leaves some characters out
    assert cov["cjk_single_piece_share"] == pytest.approx(1 - len(fallback) / len(chars), abs=1e-6)
    assert set(cov["top_byte_fallback_chars"]) <= set(fallback)
    assert len(fallback) < len(chars) / 10  # most characters are pieces of their own
    ds = open_dataset(dirty)
    all_tokens = [int(t) for s in ("train", "val") for toks in ds.tokens(s) for t in toks]
    newline = sp.piece_to_id("<0x0A>")
    byte_tokens = sum(1 for t in all_tokens if sp.is_byte(t) and t != newline)
    assert cov["byte_fallback_token_share"] == pytest.approx(byte_tokens / len(all_tokens), abs=1e-6)
    newlines = sum(1 for t in all_tokens if t == newline)
    assert newlines > 0 and cov["newline_token_share"] == pytest.approx(newlines / len(all_tokens), abs=1e-6)


def test_samples_are_train_documents_decoded(dirty: Path) -> None:
    samples = [json.loads(line) for line in (dirty / "samples.jsonl").read_text().splitlines()]
    ds = open_dataset(dirty)
    sp = load(ds.tokenizer_path)
    n_train = sum(len(idx) - 1 for idx in ds.documents("train"))
    assert len(samples) == min(32, n_train)
    for s in samples:
        j = ds.shard_names("train").index(s["shard"])
        toks, idx = ds.tokens("train")[j], ds.documents("train")[j]
        ids = [int(t) for t in toks[idx[s["document"]]:idx[s["document"] + 1] - 1]]
        assert s["tokens"] == len(ids) and s["text"] == sp.decode(ids)[:4000]
        assert not DIRT.search(s["text"])
