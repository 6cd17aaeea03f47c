"""Chinese quality figures of a served model version: validation loss, repeats, CJK share.

    python -m kiln_trainer.eval.quality VERSION_DIR HELDOUT.jsonl CONTINUATIONS.json

- **Chinese validation loss**: mean next-token cross-entropy (nats per token) of the version on
  held-out Chinese documents, each scored on its own (windows of the model's context); perplexity
  is exp(loss).
- **Longest repeat**: the longest run of one token id repeated back to back in a continuation,
  tokenized with the version's tokenizer (``馆馆馆馆`` as four single-character pieces is 4).
- **CJK share**: the share of a continuation's non-space characters that are Han ideographs (all
  CJK Unified Ideograph blocks and the compatibility ideographs). Punctuation counts against it,
  CJK punctuation too: a line of classical verse (five or seven characters and a mark) scores
  0.83–0.88, and a continuation of only ``》`` scores 0, not 1.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

_HAN_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))


def is_han(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _HAN_RANGES)


def cjk_share(text: str) -> float:
    """Share of the non-space characters that are Han ideographs; 0 for a text of only spaces."""
    chars = [c for c in text if not c.isspace()]
    return sum(map(is_han, chars)) / len(chars) if chars else 0.0


def longest_repeat(ids: Sequence[int]) -> int:
    """Length of the longest run of one id repeated back to back (0 for no ids)."""
    best = run = 0
    for i, t in enumerate(ids):
        run = run + 1 if i and t == ids[i - 1] else 1
        best = max(best, run)
    return best


@dataclass(frozen=True)
class Continuation:
    """One prompt's continuation and its figures."""

    prompt: str
    text: str
    longest_repeat: int
    cjk_share: float


def judge(prompt: str, text: str, encode: Callable[[str], list[int]]) -> Continuation:
    return Continuation(prompt, text, longest_repeat(encode(text)), round(cjk_share(text), 3))


def mean_loss(logits_fn: Callable[[Sequence[int]], list[float]], docs: Iterable[Sequence[int]]) -> float:
    """Token-weighted mean of the per-position losses ``logits_fn`` returns for each document."""
    total, count = 0.0, 0
    for ids in docs:
        losses = logits_fn(ids)
        total += sum(losses)
        count += len(losses)
    if count == 0:
        raise ValueError("held-out text: no document has two tokens to score")
    return total / count


def validation_loss(folder: Path, texts: Iterable[str]) -> tuple[float, int]:
    """Mean next-token loss of the version in `folder` on `texts` and the number of tokens scored."""
    import torch

    from kiln_trainer.serving.loader import load_version

    served = load_version(folder)
    ctx = served.context_length
    scored = 0

    def losses(ids: Sequence[int]) -> list[float]:
        nonlocal scored
        out: list[float] = []
        for start in range(0, max(len(ids) - 1, 0), ctx):
            window = torch.tensor([list(ids[start:start + ctx + 1])], dtype=torch.long)
            if window.shape[1] < 2:
                continue
            with torch.inference_mode():
                logits = served.model(window[:, :-1], use_cache=False)[0].float()
            out += torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="none").tolist()
        scored += len(out)
        return out

    loss = mean_loss(losses, (served.encode(t) + [e for e in [served.eos_id] if e is not None] for t in texts))
    return loss, scored


@dataclass(frozen=True)
class Report:
    """The figures the demo prints, against the goals of issue 15."""

    zh_val_loss: float
    zh_val_ppl: float
    zh_val_tokens: int
    continuations: list[Continuation]

    MAX_REPEAT = 3
    MIN_CJK_SHARE = 0.8

    def lines(self) -> list[str]:
        out = [f"Chinese validation loss {self.zh_val_loss:.3f} nats/token, perplexity {self.zh_val_ppl:.1f} "
               f"({self.zh_val_tokens} held-out tokens)"]
        for c in self.continuations:
            ok = c.longest_repeat <= self.MAX_REPEAT and c.cjk_share >= self.MIN_CJK_SHARE
            out.append(f"{c.prompt!r}: longest repeat {c.longest_repeat} (goal ≤ {self.MAX_REPEAT}), "
                       f"CJK share {c.cjk_share:.2f} (goal ≥ {self.MIN_CJK_SHARE}) {'ok' if ok else 'MISSED'}")
        return out

    def met(self) -> bool:
        return all(c.longest_repeat <= self.MAX_REPEAT and c.cjk_share >= self.MIN_CJK_SHARE
                   for c in self.continuations)


def report(folder: Path, heldout: Iterable[str], continuations: Iterable[tuple[str, str]]) -> Report:
    """Figures for the version in `folder`: held-out loss and each (prompt, continuation)'s repeats and CJK share."""
    import sentencepiece as spm

    loss, tokens = validation_loss(folder, heldout)
    tok = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    judged = [judge(p, t, lambda s: list(tok.encode(s))) for p, t in continuations]
    return Report(round(loss, 4), round(math.exp(loss), 2), tokens, judged)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    folder, heldout_file, cont_file = (Path(a) for a in args)
    heldout = [json.loads(line)["text"] for line in heldout_file.read_text(encoding="utf-8").splitlines() if line]
    pairs = [(c["prompt"], c["text"]) for c in json.loads(cont_file.read_text(encoding="utf-8"))]
    r = report(folder, heldout, pairs)
    print("\n".join(r.lines()))
    print(json.dumps({**asdict(r), "met": r.met()}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
