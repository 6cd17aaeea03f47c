"""Data-prep benchmarks: each figure is a ratio against a baseline measured in the same run.

    .venv/bin/python bench/bench_data.py --quick     # ~4 MB corpus, a couple of minutes on 2 cores
    .venv/bin/python bench/bench_data.py             # ~16 MB corpus

Corpus: English prose (Python's bundled pydoc topic texts), Python source files from the standard
library and generated Chinese paragraphs (kiln's tiny-corpus grammar), plus ~10% planted
near-duplicates (a few words changed). Nothing is downloaded.

Timings of tokenizer training and encoding are the best of 3 runs (the machine may be shared).

1. tokenizer training: kiln (SentencePiece BPE, all cores) vs HF `tokenizers` BpeTrainer (byte-level),
   same lines, same vocab size.
2. encode + pack throughput, all cores: kiln's pool encoder writing a uint16 spool vs HF
   `encode_batch` (rayon, all cores) and vs tiktoken `encode_ordinary_batch` on an Encoding built from
   the HF model's own byte-level ranks (cl100k cannot be downloaded here, so both use the same-size vocab).
3. near-duplicate dedup docs/s: kiln's MinHash + LSH vs datatrove 0.3's four MinHash stages
   (signature, buckets, cluster, filter), same 16x8 bands, one process each. datatrove's English
   word tokenizer needs nltk (not installed), so it gets a plain `str.split` tokenizer: that makes the
   baseline *faster* than stock datatrove, not slower.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
from kiln_api.data_config import DedupSpec, TokenizerSpec
from kiln_trainer.data import tinycorpus
from kiln_trainer.data.clean import dedup_key
from kiln_trainer.data.dedup import MinHasher, exact_hash, find_duplicates
from kiln_trainer.data.pack import Spool, encode_all
from kiln_trainer.data.tokenizer import train_tokenizer

CORES = os.cpu_count() or 1


def build_corpus(target_bytes: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    """Documents (~target_bytes of UTF-8) and the (original, near-copy) index pairs planted in them."""
    rng = random.Random(seed)
    docs: list[str] = []
    from pydoc_data import topics

    prose = [p.strip() for t in topics.topics.values() for p in t.split("\n\n") if len(p.strip()) > 200]
    docs.extend(prose)  # ~0.3 MB of English prose, each paragraph once
    size = sum(len(d.encode()) for d in docs)
    zh_target = target_bytes // 4
    while size < zh_target:
        docs.append("".join(tinycorpus.paragraph(rng, "zh") for _ in range(4)))
        size += len(docs[-1].encode())
    for p in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if size >= target_bytes * 0.9:
            break
        text = p.read_text(encoding="utf-8", errors="replace")
        for i in range(0, len(text), 6000):
            docs.append(text[i:i + 6000])
            size += len(docs[-1].encode())
    pairs: list[tuple[int, int]] = []  # (original, planted copy) positions before shuffling
    for j in rng.sample(range(len(docs)), len(docs) // 10):
        d = docs[j]
        words = d.split(" ")
        if len(words) >= 60:
            for i in rng.sample(range(len(words)), 2):
                words[i] = "edited"
            docs.append(" ".join(words))
        elif len(d) >= 200:  # Chinese: no spaces, insert a word at one place
            cut = rng.randrange(len(d))
            docs.append(d[:cut] + "忽然" + d[cut:])
        else:
            continue
        pairs.append((j, len(docs) - 1))
    order = list(range(len(docs)))
    rng.shuffle(order)
    where = {old: new for new, old in enumerate(order)}
    return [docs[i] for i in order], [(where[a], where[b]) for a, b in pairs]


def timed(fn, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN201 - bench helper
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


REPEATS = 3


def best(fn, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN201 - bench helper
    """Fastest of REPEATS runs: the machine is shared, so the minimum is the least disturbed figure.
    Every contender gets the same treatment."""
    runs = [timed(fn, *args, **kw) for _ in range(REPEATS)]
    return runs[0][0], min(t for _, t in runs)


def bench_tokenizer(docs: list[str], vocab: int, work: Path) -> dict[str, float]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    lines = [ln for d in docs for ln in d.split("\n") if ln.strip()]
    (work / "lines.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = TokenizerSpec(vocab_size=vocab, input_sentence_size=len(lines) + 1)
    _, t_kiln = best(train_tokenizer, work / "lines.txt", work / "kiln", spec, CORES)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|eos|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    _, t_hf = best(tok.train_from_iterator, lines, trainer)
    tok.save(str(work / "hf.json"))
    print(f"tokenizer training ({vocab} vocab, {len(lines)} lines): kiln/SentencePiece {t_kiln:.2f}s, "
          f"HF tokenizers {t_hf:.2f}s -> speed ratio kiln/HF = {t_hf / t_kiln:.2f}x")
    return {"train_kiln_s": t_kiln, "train_hf_s": t_hf, "train_ratio": t_hf / t_kiln}


def tiktoken_from_hf(path: Path):  # noqa: ANN201
    """A tiktoken Encoding with the HF byte-level BPE's vocabulary as ranks."""
    import tiktoken
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    byte_of = {}
    # GPT-2's byte <-> printable-unicode table, rebuilt: printable bytes map to themselves
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    n = 0
    for b in range(256):
        if b in printable:
            byte_of[chr(b)] = b
        else:
            byte_of[chr(256 + n)] = b
            n += 1
    assert set(byte_of) == set(alphabet)
    vocab = json.loads(path.read_text())["model"]["vocab"]
    ranks = {bytes(byte_of[c] for c in tok): i for tok, i in vocab.items() if tok != "<|eos|>"}
    pat = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    return tiktoken.Encoding("kiln-bench", pat_str=pat, mergeable_ranks=ranks,
                             special_tokens={"<|eos|>": vocab["<|eos|>"]})


def bench_encode(docs: list[str], work: Path) -> dict[str, float]:
    from tokenizers import Tokenizer

    mb = sum(len(d.encode()) for d in docs) / 1e6

    def kiln(workers: int) -> int:
        spool = Spool(work / "bench.spool", "uint16")
        for toks in encode_all(docs, work / "kiln.model", workers, "uint16"):
            spool.write(toks)
        spool.close()
        return spool.tokens

    _, t_serial = best(kiln, 1)
    n_kiln, t_kiln = best(kiln, CORES)
    hf = Tokenizer.from_file(str(work / "hf.json"))
    enc, t_hf = best(hf.encode_batch, docs)
    n_hf = sum(len(e.ids) for e in enc)
    tk = tiktoken_from_hf(work / "hf.json")
    tk_out, t_tk = best(tk.encode_ordinary_batch, docs, num_threads=CORES)
    n_tk = sum(len(x) for x in tk_out)
    r_hf, r_tk = t_hf / t_kiln, t_tk / t_kiln
    print(f"encode+pack {mb:.1f} MB on {CORES} cores: kiln {mb / t_kiln:.2f} MB/s ({n_kiln} tokens), "
          f"HF encode_batch {mb / t_hf:.2f} MB/s ({n_hf}), tiktoken {mb / t_tk:.2f} MB/s ({n_tk})")
    pool = CORES - 1 if CORES >= 3 else 0
    print(f"  (kiln with workers=1: {mb / t_serial:.2f} MB/s; workers={CORES} means {pool} pool processes "
          "beside the parent that reads and writes: no pool below 3)")
    print(f"  -> throughput ratio kiln/HF = {r_hf:.2f}x (goal >= 1.0), kiln/tiktoken = {r_tk:.2f}x "
          "(threads differ here; the same-thread comparison with its goal is bench/bench_tokenize.py)")
    return {"encode_kiln_mbs": mb / t_kiln, "encode_kiln_serial_mbs": mb / t_serial, "encode_hf_mbs": mb / t_hf, "encode_tiktoken_mbs": mb / t_tk,
            "encode_ratio_hf": r_hf, "encode_ratio_tiktoken": r_tk}


def _datatrove_dedup(docs: list[str], work: Path) -> np.ndarray:
    """Run datatrove's 4 MinHash stages in this process; returns the keep mask."""
    import xxhash
    from datatrove.data import Document
    from datatrove.pipeline.dedup import minhash as dm

    class _Split:
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

    dm.load_word_tokenizer = lambda language: _Split()
    cfg = dm.MinhashConfig(n_grams=5, num_buckets=16, hashes_per_bucket=8)
    base = work / "dt"
    shutil.rmtree(base, ignore_errors=True)
    documents = [Document(text=t, id=str(i)) for i, t in enumerate(docs)]
    sig = dm.MinhashDedupSignature(output_folder=str(base / "sigs"), config=cfg)
    # datatrove 0.3.0 hands str to xxhash, which the installed xxhash 3.x rejects: encode first
    sig._hash_func = lambda text: xxhash.xxh64_intdigest(text.encode())
    sig.run(iter(documents), rank=0, world_size=1)
    for b in range(cfg.num_buckets):
        dm.MinhashDedupBuckets(input_folder=str(base / "sigs"), output_folder=str(base / "buckets"),
                               config=cfg).run(None, rank=b, world_size=cfg.num_buckets)
    dm.MinhashDedupCluster(input_folder=str(base / "buckets"), output_folder=str(base / "remove"), config=cfg).run()
    kept = dm.MinhashDedupFilter(input_folder=str(base / "remove")).run(iter(documents), rank=0, world_size=1)
    mask = np.zeros(len(docs), dtype=bool)
    mask[[int(d.id) for d in kept]] = True
    return mask


def _kiln_dedup(docs: list[str], spec: DedupSpec) -> np.ndarray:
    hasher = MinHasher(spec)
    sigs = np.stack([hasher.signature(d) for d in docs])
    keep, _, _ = find_duplicates([exact_hash(dedup_key(d)) for d in docs], sigs, spec)
    return keep


def bench_dedup(docs: list[str], pairs: list[tuple[int, int]], work: Path) -> dict[str, float]:
    spec = DedupSpec(threshold=0.8, num_perm=128, bands=16)
    keep_kiln, t_kiln = timed(_kiln_dedup, docs, spec)
    keep_dt, t_dt = timed(_datatrove_dedup, docs, work)
    n = len(docs)

    def found(keep: np.ndarray) -> int:  # planted pairs of which one side was dropped
        return sum(1 for a, b in pairs if not (keep[a] and keep[b]))

    hasher = MinHasher(spec)

    def true_jaccard(a: int, b: int) -> float:
        x, y = set(hasher.shingles(docs[a]).tolist()), set(hasher.shingles(docs[b]).tolist())
        return len(x & y) / max(1, len(x | y))

    above = [(a, b) for a, b in pairs if true_jaccard(a, b) >= spec.threshold]
    recall = sum(1 for a, b in above if not (keep_kiln[a] and keep_kiln[b])) / max(1, len(above))
    ratio = t_dt / t_kiln
    print(f"near-dup dedup, {n} docs, {len(pairs)} planted near-duplicate pairs, one process each:")
    print(f"  kiln {n / t_kiln:.0f} docs/s, drops {n - int(keep_kiln.sum())}, finds {found(keep_kiln)} planted pairs; "
          f"datatrove {n / t_dt:.0f} docs/s, drops {n - int(keep_dt.sum())}, finds {found(keep_dt)}")
    print(f"  planted pairs with exact shingle Jaccard >= {spec.threshold}: {len(above)}; kiln finds "
          f"{recall:.1%} of them (datatrove's LSH has no similarity check, so it also drops pairs below it)")
    print(f"  -> docs/s ratio kiln/datatrove = {ratio:.2f}x (goal >= 1.0)")
    return {"dedup_kiln_docs_s": n / t_kiln, "dedup_datatrove_docs_s": n / t_dt, "dedup_ratio": ratio,
            "dedup_kiln_found": found(keep_kiln), "dedup_datatrove_found": found(keep_dt), "planted": len(pairs),
            "planted_above_threshold": len(above), "kiln_recall_above_threshold": recall}


def bench_filters(docs: list[str]) -> dict[str, float]:
    """Clean + quality rules: kiln's script-aware rules vs datatrove's Gopher quality + repetition
    filters (str.split word tokenizer, as above). Also counts Chinese documents each rejects: the
    corpus's Chinese is ordinary prose, so every rejection there is a rule misfiring on CJK."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import gopher_quality_filter as gq
    from datatrove.pipeline.filters import gopher_repetition_filter as gr
    from kiln_api.data_config import CleanSpec, FilterSpec
    from kiln_trainer.data.clean import clean_text
    from kiln_trainer.data.filters import check_quality

    class _Split:
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

    gq.load_word_tokenizer = gr.load_word_tokenizer = lambda language: _Split()
    quality, repetition = gq.GopherQualityFilter(), gr.GopherRepetitionFilter()
    zh = [len(re.findall(r"[\u4e00-\u9fff]", d)) > 0.3 * len(d) for d in docs]

    def kiln() -> list[bool]:
        clean, rules = CleanSpec(), FilterSpec()
        return [check_quality(clean_text(d, clean), rules) is None for d in docs]

    def datatrove() -> list[bool]:
        out = []
        for i, d in enumerate(docs):
            doc = Document(text=d, id=str(i))
            out.append(repetition.filter(doc) is True and quality.filter(doc) is True)
        return out

    k, t_k = timed(kiln)
    g, t_g = timed(datatrove)
    n, n_zh = len(docs), sum(zh)
    rej_k = sum(1 for keep, z in zip(k, zh, strict=True) if z and not keep)
    rej_g = sum(1 for keep, z in zip(g, zh, strict=True) if z and not keep)
    print(f"clean+filter, {n} docs ({n_zh} Chinese), one process each: kiln {n / t_k:.0f} docs/s rejects "
          f"{rej_k} Chinese docs; datatrove Gopher {n / t_g:.0f} docs/s rejects {rej_g} Chinese docs")
    print(f"  -> docs/s ratio kiln/datatrove = {t_g / t_k:.2f}x")
    return {"filter_kiln_docs_s": n / t_k, "filter_datatrove_docs_s": n / t_g, "filter_ratio": t_g / t_k,
            "filter_kiln_zh_rejected": rej_k, "filter_datatrove_zh_rejected": rej_g}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~4 MB corpus instead of ~16 MB")
    ap.add_argument("--vocab", type=int, default=8000, help="vocab size for both tokenizer trainers")
    args = ap.parse_args(argv)
    docs, pairs = build_corpus(4_000_000 if args.quick else 16_000_000)
    print(f"corpus: {len(docs)} docs, {sum(len(d.encode()) for d in docs) / 1e6:.1f} MB, {CORES} cores")
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        work = Path(tmp)
        results = {**bench_tokenizer(docs, args.vocab, work), **bench_encode(docs, work),
                   **bench_dedup(docs, pairs, work), **bench_filters(docs)}
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
