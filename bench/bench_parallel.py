"""Training throughput of DP=4 vs PP=2×DP=2 vs TP=2×DP=2 on CPU (gloo), same model, data and global batch.

    DS_ACCELERATOR=cpu .venv/bin/python bench/bench_parallel.py --quick   # one round, ~3-4 minutes on 2 cores
    DS_ACCELERATOR=cpu .venv/bin/python bench/bench_parallel.py --rounds 3

Baseline: the data-parallel run (4 ranks, ZeRO-1) measured in the same invocation. Each layout runs
the same trainer under torchrun with 4 processes for STEPS steps; throughput is the median of the
trainer's own tokens/s records after the first WARMUP steps (DeepSpeed start-up and the first
checkpoint excluded). Layouts alternate within each round so machine noise hits all of them, and
each layout's best round is reported. Printed ratio: layout tokens/s ÷ DP tokens/s (> 1 = faster).

What moves the ratios on CPU: all ranks share the same few cores, so compute does not scale and the
communication volume decides. DP=4 all-reduces the whole model's gradients over 4 ranks (and
ZeRO-1 all-gathers its weights) each step; PP=2 moves half the model per rank through that and
ships only activations between stages, but idles (P−1)/(m+P−1) of each step (here m = 4, 20%);
TP=2 all-reduces activations twice per block in each pass. Measured on the shared 2-core machine
(--rounds 2, load 5–7): DP 4350 tokens/s, PP 0.76×, TP 0.52×. A single round under heavy load
(load 17) once gave PP 1.32×: use several rounds on a quiet machine. On GPUs: TP wants NVLink
inside a node, PP tolerates the slower links between nodes, and m ≫ P shrinks the bubble.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from kiln_trainer.train.data import bundled_documents, write_byte_dataset

ROOT = Path(__file__).resolve().parents[1]

STEPS, WARMUP = 14, 4
LAYOUTS = {"DP=4": (1, 1), "PP=2×DP=2": (2, 1), "TP=2×DP=2": (1, 2)}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp: Path, run: str, pipeline: int, tensor: int) -> Path:
    cfg = {
        "preset": "tiny_cpu", "run": run, "storage_uri": f"file://{tmp}/store", "data": {"path": str(tmp / "data")},
        # Bigger than tiny_cpu so a step is compute, not launch overhead; heads/kv divisible by 2.
        "model": {"d_model": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 128},
        "batch": {"global_batch_size": 16, "micro_batch_size": 2, "seq_len": 128},
        "zero": {"stage": 1}, "parallel": {"pipeline": pipeline, "tensor": tensor},
        "schedule": {"max_steps": STEPS, "warmup_steps": 2},
        "checkpoint": {"every_steps": 10**6, "local_dir": str(tmp / "local"), "resume": "never"},
        "monitor": {"log_every": 1, "tensorboard": False}, "early_stop": {"eval_every_steps": 0},
    }
    path = tmp / f"{run}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_layout(tmp: Path, run: str, pipeline: int, tensor: int) -> float:
    """Median tokens/s of one 4-process run after WARMUP steps."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "4", "--master_port", str(_port()),
           "-m", "kiln_trainer.train.main", str(_config(tmp, run, pipeline, tensor))]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{run} failed:\n{out.stderr[-3000:]}")
    text = (tmp / "store" / "runs" / run / "metrics" / "metrics.jsonl").read_text()
    rates = [r["tokens_per_s"] for r in map(json.loads, text.splitlines())
             if r.get("step", 0) > WARMUP and "tokens_per_s" in r]
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one round")
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="kiln-bench-parallel-") as raw:
        tmp = Path(raw)
        write_byte_dataset(tmp / "data", bundled_documents())
        for i in range(rounds):
            for name, (p, t) in LAYOUTS.items():
                run = f"r{i}-{'pp' if p > 1 else 'tp' if t > 1 else 'dp'}"
                rate = run_layout(tmp, run, p, t)
                best[name] = max(best.get(name, 0.0), rate)
                print(f"round {i + 1}: {name:<10} {rate:8.0f} tokens/s", flush=True)
    base = best["DP=4"]
    print(f"\nbaseline DP=4 (4 ranks, ZeRO-1, gloo): {base:.0f} tokens/s (best of {rounds} round(s))")
    for name in ("PP=2×DP=2", "TP=2×DP=2"):
        print(f"{name:<10} {best[name]:8.0f} tokens/s  ratio vs DP: {best[name] / base:.2f} (> 1 = faster)")


if __name__ == "__main__":
    main()
