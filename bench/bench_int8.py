"""INT8 serving vs fp32, same model, same run: resident memory, tokens/s, perplexity.

Each variant is loaded in its own fresh process by the serving loader (`serving.loader.build_model`,
what Triton's model.py runs), so RSS is that of a serving process and nothing is shared:

  * RSS ratio     = INT8 RSS / fp32 RSS, whole process and above the process's RSS before loading
                    (torch alone is ~0.3-0.5 GiB; goal <= 0.4; lower is better);
  * tokens/s ratio = INT8 / fp32 greedy decode, one prompt, KV cache (higher is better; > 1 faster);
  * perplexity delta = INT8 ppl / fp32 ppl - 1 (goal <= +2%; lower is better).

The weights are synthetic (no trained checkpoint of this size exists here): a GPT of the chosen shape
initialised as training does, except the embedding (the tied head) at std 4/sqrt(d_model), so its
next-token distributions are peaked (a network with every layer that large is chaotic, which trained
models are not: there a 0.7% weight error grows to a >20% perplexity change), and
the evaluation text is sampled from the fp32 model itself. The perplexity delta therefore measures how
far INT8 moves a confident model's distributions; the export gate measures it on real validation data
for every trained model (`manifest.json` int8.ppl_increase).

Usage: .venv/bin/python bench/bench_int8.py [--shape small|medium|large] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {  # d_model, n_layers, n_heads, vocab
    "small": (256, 4, 4, 2048),
    "medium": (1024, 8, 16, 8192),
    "large": (1536, 12, 12, 16384),
}
SEQ = 256


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_weights(folder: Path, shape: str, seed: int) -> None:
    """model_config.json, fp32.safetensors, int8.safetensors and eval.json (token windows)."""
    import torch
    from kiln_api.train_config import ModelConfig
    from kiln_trainer.export.quantize import quantize_state_dict
    from kiln_trainer.serving.cached import servable
    from kiln_trainer.serving.generate import SamplingParams, generate
    from kiln_trainer.train.model import GPT, model_config_json
    from safetensors.torch import save_file

    d, layers, heads, vocab = SHAPES[shape]
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, max_seq_len=SEQ)
    model = GPT(cfg).eval()
    with torch.no_grad():  # embedding (= tied head) std 4/sqrt(d): logits with std ~4, peaked predictions
        model.tok_emb.weight.mul_(4 / d**0.5 / cfg.init_std)
    sd = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied, as exported
    (folder / "model_config.json").write_text(model_config_json(cfg))
    save_file(sd, str(folder / "fp32.safetensors"))
    save_file(quantize_state_dict(sd), str(folder / "int8.safetensors"))
    gen = servable(model)
    windows = []
    for i in range(2):  # text the fp32 model finds likely: its own samples
        prompt = [int(t) for t in torch.randint(0, vocab, (4,), generator=torch.Generator().manual_seed(seed + i))]
        windows.append(prompt + generate(gen, prompt, SamplingParams(max_new_tokens=SEQ // 2 - 4, temperature=1.0,
                                                                     seed=seed + i)))
    (folder / "eval.json").write_text(json.dumps(windows))


def measure(folder: Path, variant: str, new_tokens: int) -> dict[str, float]:
    """Run in a fresh process: load one variant as the server does, then time and score it."""
    import torch
    from kiln_trainer.export.quantize import perplexity
    from kiln_trainer.serving.cached import servable
    from kiln_trainer.serving.generate import SamplingParams, generate
    from kiln_trainer.serving.int8 import weight_dtypes
    from kiln_trainer.serving.loader import build_model
    from safetensors.torch import load_file

    before = rss_bytes()
    model = build_model((folder / "model_config.json").read_text(), load_file(str(folder / f"{variant}.safetensors")))
    loaded = rss_bytes()
    gen = servable(model)
    prompt = list(range(1, 17))
    params = SamplingParams(max_new_tokens=new_tokens)
    generate(gen, prompt, SamplingParams(max_new_tokens=2))  # warm-up
    tps = 0.0
    for _ in range(3):  # best of three: the machine is shared, the best run is the least disturbed
        start = time.perf_counter()
        out = generate(gen, prompt, params)
        tps = max(tps, len(out) / (time.perf_counter() - start))
    windows = json.loads((folder / "eval.json").read_text())
    with torch.inference_mode():
        ppl = perplexity(lambda ids: gen(ids, use_cache=False)[0], windows)
    return {"rss_before": before, "rss_loaded": loaded, "rss_after_run": rss_bytes(), "tokens_per_s": tps,
            "ppl": ppl, "weights": weight_dtypes(model)}


def _child(folder: Path, variant: str, new_tokens: int, threads: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--measure", str(folder), "--variant", variant,
                          "--new-tokens", str(new_tokens)], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"measuring {variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="medium")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.variant, args.new_tokens)))
        return
    with tempfile.TemporaryDirectory(prefix="kiln-bench-int8-") as tmp:
        folder = Path(tmp)
        make_weights(folder, args.shape, args.seed)
        fp = _child(folder, "fp32", args.new_tokens, args.threads)  # the baseline, same run
        q8 = _child(folder, "int8", args.new_tokens, args.threads)
    d, layers, heads, vocab = SHAPES[args.shape]
    print(f"shape {args.shape}: d_model {d}, {layers} layers, {heads} heads, vocab {vocab}; "
          f"{args.threads} thread(s); baseline: fp32 loaded by the same loader in a fresh process")
    for name, r in (("fp32", fp), ("int8", q8)):
        w = ", ".join(f"{k} {_mib(v)}" for k, v in r["weights"].items())
        print(f"  {name}: RSS {_mib(r['rss_loaded'])} (before load {_mib(r['rss_before'])}, after decoding "
              f"{_mib(r['rss_after_run'])}); resident weights {w}; {r['tokens_per_s']:.1f} tokens/s; ppl {r['ppl']:.4f}")
    whole = q8["rss_after_run"] / fp["rss_after_run"]
    above = (q8["rss_after_run"] - q8["rss_before"]) / (fp["rss_after_run"] - fp["rss_before"])
    tps = q8["tokens_per_s"] / fp["tokens_per_s"]
    dppl = q8["ppl"] / fp["ppl"] - 1
    print(f"INT8/fp32 RSS ratio (whole process): x{whole:.3f}  (lower is better; goal <= 0.4)")
    print(f"INT8/fp32 RSS ratio (above the process before loading): x{above:.3f}  (lower is better)")
    print(f"INT8/fp32 tokens/s ratio: x{tps:.2f}  ({'INT8 faster' if tps > 1 else 'INT8 slower'}; higher is better)")
    print(f"INT8 perplexity delta vs fp32: {dppl:+.2%}  (lower is better; goal <= +2%)")


if __name__ == "__main__":
    main()
