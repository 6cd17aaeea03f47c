"""The demo's training text: real Chinese and English from the registry corpora, cut to demo size.

    python -m kiln_trainer.data.demo_corpus /tmp/demo-corpus     # prints the files written

- ``zh/``: the poems of ``chinese-poetry`` written in simplified characters whose every line is
  made of five- or seven-character phrases (regulated verse, and the ci tunes such as 浣溪沙 and
  玉楼春 that keep that metre), up to ``ZH_BYTES``. Most of the package is in traditional characters;
  a Chinese-first model served to today's readers wants simplified ones, and mixing both scripts
  would split a small model's capacity between two spellings of the same words. The metre is the
  point of the cut: a model the demo can train in a minute learns "seven characters and a mark"
  long before it learns free prose, and its greedy lines then read as verse instead of the
  three-character stubs a mix of every collection gave.
- ``en/``: pages of ``python-docs`` (the English Python documentation), up to ``EN_BYTES``.
- ``heldout/zh.jsonl``: simplified documents that are in no training file, for the Chinese
  validation loss (:mod:`kiln_trainer.eval.quality`).

Files are ``docs-0000.jsonl.zst`` (field ``text``), the prepare step's jsonl reader takes them as
they are; the selection is deterministic, so two demos train on the same bytes.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import zstandard

from kiln_trainer.data import registry_corpus

ZH_BYTES = 1_500_000
"""Chinese training text cap (UTF-8 bytes); the verse of the package is ~0.5 MB (~170k characters)."""
PHRASE_LENGTHS = (5, 7)
"""Characters per phrase (between two marks) of the verse the demo trains on."""
EN_BYTES = 100_000
"""English training text (~30k tokens: about a seventh of what the demo sees, its Chinese stays the bulk)."""
HELDOUT_DOCS = 200
"""Verse documents kept out of training for the Chinese validation loss."""
HELDOUT_EVERY = 14
"""One held-out document per this many verse documents (about 210 over the package)."""

# Characters whose spelling differs between the scripts, each written both ways (same order):
# a document is simplified when it uses more of the first row than of the second.
_SIMPLIFIED = set("们这来说为无与长时东开见门风云书国学将从后万乐问岁归爱离听梦乡处欢独难远边过还双旧几对当红绿叶断声飞马鱼鸟龙")
_TRADITIONAL = set("們這來說為無與長時東開見門風雲書國學將從後萬樂問歲歸愛離聽夢鄉處歡獨難遠邊過還雙舊幾對當紅綠葉斷聲飛馬魚鳥龍")


def is_simplified(text: str) -> bool:
    """True when the text spells the marker characters the simplified way more often than the traditional."""
    simplified = sum(c in _SIMPLIFIED for c in text)
    return simplified > sum(c in _TRADITIONAL for c in text)


_PHRASE_END = re.compile(r"[，。？！；、]")


def is_regular_verse(text: str) -> bool:
    """True for a poem (``《title》 author``, blank line, body) whose body lines all split into
    phrases of PHRASE_LENGTHS characters at the marks; at least two lines."""
    _, sep, body = text.partition("\n\n")
    lines = [ln.strip() for ln in body.splitlines() if ln.strip()] if sep else []
    if len(lines) < 2:
        return False
    return all(len(p) in PHRASE_LENGTHS for ln in lines for p in _PHRASE_END.split(ln) if p) and all(
        _PHRASE_END.search(ln) for ln in lines)


def _take(docs: Iterable[str], budget: int) -> Iterator[str]:
    """Documents in order until their UTF-8 size reaches `budget`."""
    used = 0
    for doc in docs:
        if used >= budget:
            return
        used += len(doc.encode("utf-8"))
        yield doc


def _write(path: Path, docs: Iterable[str], compress: bool = True) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    path.write_bytes(zstandard.ZstdCompressor(level=9).compress(lines) if compress else lines)
    return lines.count(b"\n")


def build(out: Path) -> dict[str, int]:
    """Write zh/, en/ and heldout/ under `out` (fetching the corpora first if needed); returns document counts."""
    verse = (d for d in registry_corpus.documents("chinese-poetry") if is_simplified(d) and is_regular_verse(d))
    train, heldout = [], []
    for i, doc in enumerate(verse):
        if i % HELDOUT_EVERY == HELDOUT_EVERY - 1:
            heldout.append(doc)  # never a training document, spread over the whole package
        else:
            train.append(doc)
    zh = list(_take(train, ZH_BYTES))
    counts = {
        "zh": _write(out / "zh" / "docs-0000.jsonl.zst", zh),
        "en": _write(out / "en" / "docs-0000.jsonl.zst", _take(registry_corpus.documents("python-docs"), EN_BYTES)),
        "heldout": _write(out / "heldout" / "zh.jsonl", heldout[:HELDOUT_DOCS], compress=False),
    }
    return counts


def cached() -> Path:
    """The demo corpus under the registry corpora's cache, built on first use (the folder names the cut)."""
    out = registry_corpus.folder("chinese-poetry").parent / f"demo-verse{ZH_BYTES}-h{HELDOUT_EVERY}-en{EN_BYTES}"
    if not (out / "counts.json").exists():  # written last: a half-built folder is built again
        counts = build(out)
        (out / "counts.json").write_text(json.dumps(counts))
    return out


def heldout_texts(out: Path) -> list[str]:
    """The held-out Chinese documents written by :func:`build`."""
    with open(out / "heldout" / "zh.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kiln_trainer.data.demo_corpus OUT_DIR", file=sys.stderr)
        return 2
    print(json.dumps(build(Path(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
