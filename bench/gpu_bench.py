"""GPU throughput of the kiln trainer: tokens/s and MFU for the ~125M and ~1B presets on one GPU,
through the real training loop (DeepSpeed engine, sinks, per-step all-reduce).

The config is the operator's: ``kiln_trainer.train.rehearsal.compile_preset`` compiles a 1-node × 1-GPU
TrainingRun for the preset with ``kiln_api.compiler.compile_run`` (bf16, ZeRO stage, activation
checkpointing, micro-batch and accumulation exactly as a pod would get them — the same path as the CPU
rehearsal test); only locations move to a temporary folder and the step budget is the bench's.

    .venv/bin/python bench/gpu_bench.py              # both presets, ~5 minutes on one H100
    .venv/bin/python bench/gpu_bench.py --quick      # 125M only, fewer steps
    DS_ACCELERATOR=cpu .venv/bin/python bench/gpu_bench.py --smoke   # the script's own check on CPU

Baseline named in the same output: the anchor of ~40% MFU (OLMo-core 1B on H100, bf16, seq 4k).
MFU = tokens/s × (6N + 12·L·H·Q·T) / peak (989 TFLOP/s dense bf16 for H100/H200; override with
--peak-tflops). Data are random token ids (throughput does not depend on content). Checkpointing
is not timed: the run is stopped after the last timed step, before the final save. --smoke shrinks
the model (rehearsal.shrink_model, the test-only override) so the same compiled config runs on CPU.
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
from kiln_api.train_presets import VOCAB_SIZE
from kiln_trainer.train.data import write_flat_dataset
from kiln_trainer.train.loop import Hooks, TrainState
from kiln_trainer.train.main import run_training
from kiln_trainer.train.metrics import peak_flops
from kiln_trainer.train.model import flops_per_token
from kiln_trainer.train.rehearsal import compile_preset, relocate, shrink_model

ANCHOR_MFU = 0.40
VOCAB = VOCAB_SIZE  # the presets' vocabulary (the spec's tokenizer size decides the model's embedding rows)


class Done(Exception):
    """Raised after the last timed step so the final checkpoint is skipped."""


class Clock(Hooks):
    def __init__(self, last: int) -> None:
        self.last, self.t = last, {}

    def after_step(self, state: TrainState, loss: float) -> None:
        self.t[state.step] = time.perf_counter()
        if state.step == self.last:
            raise Done


def configure(preset: str, tmp: Path, data: Path, steps: int, smoke: bool) -> TrainConfig:
    """The preset as the operator compiles it for one GPU; locations moved below ``tmp``."""
    compiled = compile_preset(preset, name="gpu-bench", nodes=1, gpus_per_node=1, max_steps=steps + 1,
                              vocab_size=VOCAB)
    raw = relocate(compiled.raw["train.yaml"], f"file://{tmp}/store", data__path=str(data),
                   checkpoint__local_dir=str(tmp / "local"))
    return TrainConfig.from_dict(shrink_model(raw) if smoke else raw)


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
    ap.add_argument("--smoke", action="store_true", help="gpt_125m shrunk, on CPU: checks the script itself")
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="kiln-gpu-bench-") as tmp_s:
        tmp = Path(tmp_s)
        rng = np.random.default_rng(0)
        write_flat_dataset(tmp / "data", {"train": rng.integers(0, VOCAB, 200_000 if args.smoke else 40_000_000),
                                          "val": rng.integers(0, VOCAB, 100_000)}, vocab_size=VOCAB, eos_id=0)
        # (preset, timed steps, warm-up steps not timed)
        cases = [("gpt_125m", 3, 1)] if args.smoke else [("gpt_125m", 6 if args.quick else 12, 2)]
        if not (args.smoke or args.quick):
            cases.append(("gpt_1b", 8, 2))
        for preset, steps, warmup in cases:
            cfg = configure(preset, tmp / preset, tmp / "data", steps, args.smoke)
            label = f"{preset}{' (smoke, shrunk)' if args.smoke else ''} bf16 ZeRO-{cfg.zero.stage}"
            measure(label, cfg, warmup, steps, args.peak_tflops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
