"""What a user checks before training on a dataset, computed at prepare time into the dataset folder.

- `CoverageTally`: how well the trained tokenizer covers the corpus's CJK characters. A character
  that is not a piece of its own falls back to UTF-8 byte pieces (three tokens for one ideograph),
  which costs context and makes the model assemble characters from bytes — a common cause of a
  Chinese model emitting broken or repeated characters. Recorded in ``report.json`` as
  ``tokenizer_coverage``: CJK characters seen (occurrences and distinct), the share of them that are
  single pieces (by occurrence and by distinct character), the share of all tokens that are byte
  pieces other than the newline, and the share that are newlines: SentencePiece trains on lines,
  so ``\n`` is never a piece and every newline is the byte piece ``<0x0A>`` (one token either way;
  counted apart so that it does not hide real fallbacks). ``top_byte_fallback_chars`` lists the most
  frequent CJK characters without a piece.
- `write_samples`: ``samples.jsonl``, the decoded text of documents taken evenly across the train
  shards — the cleaned text exactly as the trainer will read it (`kiln data sample` prints it).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from kiln_trainer.data.tokenizer import EOS_ID

SAMPLES = "samples.jsonl"
SAMPLE_DOCS = 32
SAMPLE_CHARS = 4000  # longer documents are cut (the record says so) to keep the file small
_IDEOGRAPH = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")


class CoverageTally:
    """Counts CJK characters of the documents and byte-fallback tokens of their encodings."""

    def __init__(self, model_path: Path) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        self.is_byte = np.array([self.sp.is_byte(i) for i in range(self.sp.get_piece_size())], dtype=bool)
        self.newline_id = self.sp.piece_to_id("<0x0A>")
        self.chars: Counter[str] = Counter()
        self.tokens = 0
        self.byte_tokens = 0
        self.newline_tokens = 0

    def add_text(self, text: str) -> None:
        self.chars.update(_IDEOGRAPH.findall(text))

    def add_tokens(self, tokens: np.ndarray, copies: int = 1) -> None:
        ids = np.asarray(tokens, dtype=np.int64)
        newlines = int((ids == self.newline_id).sum()) if self.is_byte[self.newline_id] else 0
        self.tokens += len(ids) * copies
        self.byte_tokens += (int(self.is_byte[ids].sum()) - newlines) * copies
        self.newline_tokens += newlines * copies

    def _single_piece(self, ch: str) -> bool:
        i = self.sp.piece_to_id(ch)
        return i != self.sp.unk_id() and not self.is_byte[i]

    def summary(self) -> dict[str, Any]:
        single = {ch for ch in self.chars if self._single_piece(ch)}
        occurrences = sum(self.chars.values())
        covered = sum(n for ch, n in self.chars.items() if ch in single)
        return {
            "cjk_chars": occurrences,
            "cjk_distinct": len(self.chars),
            "cjk_single_piece_share": round(covered / occurrences, 6) if occurrences else None,
            "cjk_distinct_single_piece_share": round(len(single) / len(self.chars), 6) if self.chars else None,
            "cjk_byte_fallback_chars": occurrences - covered,
            "byte_fallback_token_share": round(self.byte_tokens / self.tokens, 6) if self.tokens else None,
            "newline_token_share": round(self.newline_tokens / self.tokens, 6) if self.tokens else None,
            "top_byte_fallback_chars": "".join([ch for ch, _ in self.chars.most_common() if ch not in single][:40]),
        }


def write_samples(shards: list[tuple[str, Path, Path]], dtype: str, model_path: Path, out: Path,
                  n: int = SAMPLE_DOCS) -> int:
    """Decode `n` documents spread evenly over the given (name, bin, idx) shards into `out` (jsonl)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    offsets = [np.load(idx_path, allow_pickle=False) for _, _, idx_path in shards]
    counts = np.array([len(o) - 1 for o in offsets], dtype=np.int64)
    total = int(counts.sum())
    picks = sorted({k * total // n for k in range(n)}) if total > n else list(range(total))
    firsts = np.concatenate([[0], np.cumsum(counts)])
    with open(out, "w", encoding="utf-8") as f:
        for k in picks:
            j = int(np.searchsorted(firsts, k, side="right")) - 1  # the shard holding document k
            name, bin_path, _ = shards[j]
            idx, i = offsets[j], k - int(firsts[j])
            toks = np.memmap(bin_path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")
            ids = [int(t) for t in toks[idx[i]:idx[i + 1]] if t != EOS_ID]
            text = sp.decode(ids)
            f.write(json.dumps({"shard": name, "document": i, "tokens": len(ids),
                                "truncated": len(text) > SAMPLE_CHARS, "text": text[:SAMPLE_CHARS]},
                               ensure_ascii=False) + "\n")
    return len(picks)
