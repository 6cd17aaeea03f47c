"""Encode + pack throughput: kiln's encoder vs tiktoken on the same text, same thread count.

    .venv/bin/python bench/bench_tokenize.py            # ~16 MB corpus, 1 thread each, 5 reps, ~1-2 min on 2 cores
    .venv/bin/python bench/bench_tokenize.py --long     # also at all cores each (~4 min on 2 loaded cores)

Both sides turn the same documents into one little-endian uint16 array with EOS after each document
(kiln: `encode_all` into a `Spool` file, exactly what `prepare` runs; tiktoken: `encode_ordinary_batch`
packed with numpy into a file the same way). tiktoken gets an Encoding built from an HF byte-level
BPE trained on the same lines with the same vocab size (cl100k cannot be downloaded here).

Each repetition times both sides back to back (alternating which goes first) with a fresh kiln
encoder, so kiln's word cache starts cold every time. Ratio = kiln MB/s / tiktoken MB/s: higher is
better, goal >= 0.6 in every repetition, at 1 thread each (and with --long at all cores each too:
kiln a pool of that many processes beside the parent, tiktoken that many threads).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_data import build_corpus, tiktoken_from_hf
from kiln_api.data_config import TokenizerSpec
from kiln_trainer.data.pack import Spool, encode_all
from kiln_trainer.data.tokenizer import EOS_ID, train_tokenizer

CORES = os.cpu_count() or 1
GOAL = 0.6


def train_both(docs: list[str], vocab: int, work: Path):  # noqa: ANN201 - returns a tiktoken Encoding
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    lines = [ln for d in docs for ln in d.split("\n") if ln.strip()]
    (work / "lines.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    train_tokenizer(work / "lines.txt", work / "kiln", TokenizerSpec(vocab_size=vocab, input_sentence_size=len(lines) + 1),
                    CORES)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|eos|>"], show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(work / "hf.json"))
    return tiktoken_from_hf(work / "hf.json")


def kiln_pack(docs: list[str], model: Path, threads: int, out: Path) -> int:
    # encode_all's `workers` counts the parent: a pool of `threads` processes needs threads + 1
    spool = Spool(out, "uint16")
    for toks in encode_all(docs, model, 1 if threads == 1 else threads + 1, "uint16"):
        spool.write(toks)
    spool.close()
    return spool.tokens


def tiktoken_pack(docs: list[str], enc, threads: int, out: Path) -> int:  # noqa: ANN001
    ids = enc.encode_ordinary_batch(docs, num_threads=threads)
    eos = np.array([EOS_ID], dtype="<u2")
    flat = np.concatenate([a for x in ids for a in (np.array(x, dtype="<u2"), eos)])
    out.write_bytes(flat.tobytes())
    return len(flat)


def timed(fn, *args) -> float:  # noqa: ANN001, ANN002
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def compare(docs: list[str], model: Path, enc, threads: int, reps: int, work: Path) -> list[float]:  # noqa: ANN001
    mb = sum(len(d.encode()) for d in docs) / 1e6
    ratios = []
    for r in range(reps):
        sides = [("kiln", lambda: timed(kiln_pack, docs, model, threads, work / "k.bin")),
                 ("tiktoken", lambda: timed(tiktoken_pack, docs, enc, threads, work / "t.bin"))]
        t = {name: fn() for name, fn in (sides if r % 2 == 0 else sides[::-1])}
        ratios.append(t["tiktoken"] / t["kiln"])
        print(f"  {threads} thread(s), rep {r + 1}: kiln {mb / t['kiln']:.2f} MB/s, tiktoken {mb / t['tiktoken']:.2f} MB/s "
              f"-> {ratios[-1]:.2f}x", flush=True)
    return ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long", action="store_true", help="also compare at all cores (1 thread only by default)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--vocab", type=int, default=8000)
    args = ap.parse_args(argv)
    docs, _ = build_corpus(16_000_000)
    mb = sum(len(d.encode()) for d in docs) / 1e6
    print(f"corpus: {len(docs)} docs, {mb:.1f} MB (English prose, Python source, Chinese), {CORES} cores")
    ok = True
    with tempfile.TemporaryDirectory(prefix="kiln-bench-tok-") as tmp:
        work = Path(tmp)
        enc = train_both(docs, args.vocab, work)
        n_kiln = kiln_pack(docs, work / "kiln.model", 1, work / "k.bin")
        n_tk = tiktoken_pack(docs, enc, 1, work / "t.bin")
        print(f"tokens (EOS included): kiln {n_kiln:,}, tiktoken {n_tk:,} (vocab {args.vocab} each)")
        for threads in sorted({1, CORES} if args.long else {1}):
            ratios = compare(docs, work / "kiln.model", enc, threads, args.reps, work)
            met = min(ratios) >= GOAL
            ok &= met
            print(f"encode+pack kiln/tiktoken MB/s at {threads} thread(s), {args.reps} reps (higher is better): "
                  f"min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x (goal >= {GOAL}x every rep: "
                  f"{'met' if met else 'MISSED'})")
    print(f"tokenizer goal {'met' if ok else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
