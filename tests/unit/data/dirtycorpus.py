"""A small dataset prepared from Chinese text in every kind of dirt the cleaning steps remove.

Shared by the data tests and the `kiln data` CLI tests (which add this folder to sys.path).
"""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import yaml
from kiln_trainer.data import tinycorpus
from kiln_trainer.data.prepare import dataset_uri, load_config
from kiln_trainer.data.prepare import main as prepare


def dirty_docs(n: int = 60, seed: int = 3) -> list[str]:
    """Chinese paragraphs of the tiny corpus, each in one kind of real-world dirt."""
    rng = random.Random(seed)
    kinds = [
        lambda p: f"\x1b[33m警告\x1b[m: {p}\x1b[0m",
        lambda p: f".TH DEMO 1\n.SH 描述\n{textwrap.fill(p, 20)}\n.TP\n.B \\-v\n\\fB详细\\fR输出。",
        lambda p: f"'''{p[:4]}'''是{{{{lang|zh}}}}[[条目|{p[4:8]}]]。{p}<ref>注释</ref>",
        lambda p: f"# 标题\n\n**{p}**\n\n![图](a.png) [链接](https://example.org/x)",
        lambda p: textwrap.fill(p, 15),
        lambda p: f"<div><p>{p}</p><script>var shown = false;</script>&nbsp;&lt;完&gt;</div>",
    ]
    return [kinds[i % len(kinds)](tinycorpus.paragraph(rng, "zh")) for i in range(n)]


def prepare_dirty(tmp: Path, **data: object) -> Path:
    """A prepared dataset of `dirty_docs` in a local folder; returns the dataset folder."""
    (tmp / "in").mkdir(parents=True, exist_ok=True)
    rows = [json.dumps({"text": t}, ensure_ascii=False) for t in dirty_docs()]
    (tmp / "in" / "dirty.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = {"sources": [{"uri": str(tmp / "in" / "*.jsonl"), "domain": "dirty"}],
            "tokenizer": {"vocab_size": 500, "character_coverage": 0.98}, "packing": {"val_fraction": 0.1},
            "dedup": {"near": False}, **data}
    cfg = tmp / "prepare.yaml"
    cfg.write_text(yaml.safe_dump({"output": f"file://{tmp / 'out'}", "workers": 1, "data": spec}, allow_unicode=True))
    assert prepare(str(cfg)) == 0
    return Path(dataset_uri(load_config(cfg))[len("file://"):])
