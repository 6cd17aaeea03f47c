"""GPU throughput of the kiln trainer: tokens/s and MFU for the ~125M and ~1B presets on one GPU,
bf16 + ZeRO-2, through the real training loop (DeepSpeed engine, sinks, per-step all-reduce).

    .venv/bin/python bench/gpu_bench.py              # both presets, ~5 minutes on one H100
    .venv/bin/python bench/gpu_bench.py --quick      # 125M only, fewer steps
    DS_ACCELERATOR=cpu .venv/bin/python bench/gpu_bench.py --smoke   # the script's own check on CPU

Baseline named in the same output: the anchor of ~40% MFU (OLMo-core 1B on H100, bf16, seq 4k).
MFU = tokens/s × (6N + 12·L·H·Q·T) / peak (989 TFLOP/s dense bf16 for H100/H200; override with
--peak-tflops). Data are random token ids (throughput does not depend on content). Checkpointing
is not timed: the run is stopped after the last timed step, before the final save.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from kiln_api.train_config import TrainConfig
from kiln_api.train_presets import gpt_1b, gpt_125m, tiny_cpu
from kiln_trainer.train.data import write_flat_dataset
from kiln_trainer.train.loop import Hooks, TrainState
from kiln_trainer.train.main import run_training
from kiln_trainer.train.metrics import peak_flops
from kiln_trainer.train.model import flops_per_token

ANCHOR_MFU = 0.40


class Done(Exception):
    """Raised after the last timed step so the final checkpoint is skipped."""


class Clock(Hooks):
    def __init__(self, last: int) -> None:
        self.last, self.t = last, {}

    def after_step(self, state: TrainState, loss: float) -> None:
        self.t[state.step] = time.perf_counter()
        if state.step == self.last:
            raise Done


def configure(preset: TrainConfig, tmp: Path, data: Path, micro: int, accum: int, steps: int) -> TrainConfig:
    raw = preset.to_dict()
    raw.update(run="gpu-bench", storage_uri=f"file://{tmp}/store")
    raw["data"]["path"] = str(data)
    raw["batch"].update(micro_batch_size=micro, global_batch_size=micro * accum)
    raw["schedule"].update(max_steps=steps + 1, max_tokens=None, warmup_steps=2)
    raw["checkpoint"].update(every_steps=10**6, local_dir=str(tmp / "local"), resume="never")
    raw["early_stop"].update(eval_every_steps=0, patience=0)
    raw["monitor"].update(tensorboard=False, log_every=10)
    return TrainConfig.from_dict(raw)


def measure(name: str, cfg: TrainConfig, warmup: int, steps: int, peak_tflops: float | None) -> None:
    clock = Clock(steps)
    try:
        out = run_training(cfg, hooks=clock)
        raise RuntimeError(f"{name}: the run ended ({out.reason}) before the last timed step")
    except Done:
        pass
    tokens = (steps - warmup) * cfg.batch.global_batch_size * cfg.batch.seq_len
    rate = tokens / (clock.t[steps] - clock.t[warmup])
    peak = peak_flops(peak_tflops)
    fpt = flops_per_token(cfg.model, cfg.batch.seq_len)
    mfu = f"{rate * fpt / peak:.1%}" if peak else "n/a (no known peak)"
    ratio = f", {rate * fpt / peak / ANCHOR_MFU:.2f}x the 40% anchor" if peak else ""
    print(f"{name}: {rate:,.0f} tokens/s, MFU {mfu}{ratio} (micro {cfg.batch.micro_batch_size} × accum "
          f"{cfg.batch.global_batch_size // cfg.batch.micro_batch_size}, seq {cfg.batch.seq_len}, "
          f"{steps - warmup} timed steps)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="125M only, fewer steps")
    ap.add_argument("--smoke", action="store_true", help="tiny_cpu on CPU: checks the script itself")
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="kiln-gpu-bench-") as tmp_s:
        tmp = Path(tmp_s)
        vocab = 2048 if args.smoke else 50304
        rng = np.random.default_rng(0)
        write_flat_dataset(tmp / "data", {"train": rng.integers(0, vocab, 40_000_000 if not args.smoke else 200_000),
                                          "val": rng.integers(0, vocab, 100_000)}, vocab_size=vocab, eos_id=0)
        if args.smoke:
            cases = [("tiny_cpu (smoke)", tiny_cpu(), 4, 2, 6, 2)]
        else:
            cases = [("gpt_125m bf16 ZeRO-2", gpt_125m(), 16, 4, 12 if args.quick else 25, 4)]
            if not args.quick:
                cases.append(("gpt_1b bf16 ZeRO-2", gpt_1b(), 8, 4, 15, 4))
        for name, preset, micro, accum, steps, warmup in cases:
            measure(name, configure(preset, tmp / name.split()[0], tmp / "data", micro, accum, steps), warmup, steps,
                    args.peak_tflops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
