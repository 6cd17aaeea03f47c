"""Shared helpers for the data-prep unit tests: a small corpus and config files."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from kiln_trainer.data import tinycorpus


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four files (txt, jsonl, gz) of the tiny corpus grammar, a fifth of its size, plus planted dups."""
    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(5)
    en = [tinycorpus.paragraph(rng, "en") for _ in range(120)]
    zh = [tinycorpus.paragraph(rng, "zh") for _ in range(100)]
    en += [en[3], en[7].replace(".", "!", 1)]  # one exact and one near duplicate
    (d / "a_en.txt").write_text("\n\n".join(en) + "\n", encoding="utf-8")
    (d / "b_zh.txt").write_text("\n\n".join(zh) + "\n", encoding="utf-8")
    import gzip
    import json

    rows = [json.dumps({"text": tinycorpus.paragraph(rng, "en"), "date": f"2020-01-{i % 28 + 1:02d}"}) for i in range(60)]
    (d / "c_notes.jsonl.gz").write_bytes(gzip.compress(("\n".join(rows) + "\n").encode(), mtime=0))
    rows = [json.dumps({"text": tinycorpus.paragraph(rng, "zh")}, ensure_ascii=False) for _ in range(60)]
    (d / "d_notes.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return d


def _write_config(tmp: Path, corpus: Path, out: Path, **overrides: Any) -> Path:
    """A prepare config over `corpus`; `overrides` replace top-level data keys (or `workers`)."""
    data: dict[str, Any] = {
        "sources": [
            {"uri": str(corpus / "*.txt"), "format": "txt", "domain": "stories"},
            {"uri": str(corpus / "*.jsonl*"), "format": "jsonl", "domain": "notes"},
        ],
        "tokenizer": {"vocab_size": 600},
        "packing": {"val_fraction": 0.1, "num_shards": 2},
    }
    workers = overrides.pop("workers", 1)
    data.update(overrides)
    path = tmp / f"cfg-{abs(hash(repr(sorted(data.items())))) % 10**8}-{workers}.yaml"
    path.write_text(yaml.safe_dump({"output": f"file://{out}", "workers": workers, "data": data}))
    return path


@pytest.fixture(scope="session")
def write_config() -> Any:
    """The config writer (a fixture because tests here are not a package)."""
    return _write_config
