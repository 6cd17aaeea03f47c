"""Trainer benchmarks: each figure is a ratio against a baseline measured in the same run.

    DS_ACCELERATOR=cpu .venv/bin/python bench/bench_trainer.py          # ~1-2 minutes on 2 cores
    DS_ACCELERATOR=cpu .venv/bin/python bench/bench_trainer.py --long

1. CPU step throughput: the kiln trainer (DeepSpeed ZeRO-0 engine, gloo, sinks, the per-step
   all-reduce, the end checkpoint excluded) vs a plain PyTorch loop (torch AdamW, clip, same LR
   schedule) on the same model, data windows, micro-batch and accumulation. Goal: overhead <= 10%.
   Both runs alternate in rounds so machine noise hits both; the best round of each is reported.
   One intra-op thread for both (the machine is shared; see main()).
Ratio = kiln time / plain time: lower is better.
The checkpoint upload and the training stall: bench/bench_checkpoint.py; 2 processes with ZeRO-2/3 vs
DDP: bench/bench_trainer_dist.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from kiln_api.train_config import TrainConfig  # noqa: E402
from kiln_api.train_presets import tiny_cpu  # noqa: E402
from kiln_trainer.train.data import (  # noqa: E402
    WindowSampler,
    bundled_documents,
    causal_inputs,
    micro_batch_start,
    read_flat_dataset,
    write_byte_dataset,
)
from kiln_trainer.train.loop import Hooks, TrainState  # noqa: E402
from kiln_trainer.train.main import run_training  # noqa: E402
from kiln_trainer.train.model import GPT  # noqa: E402
from kiln_trainer.train.schedule import lr_at  # noqa: E402

WARMUP = 3


def bench_config(tmp: Path, data: Path, steps: int) -> TrainConfig:
    raw = tiny_cpu(run=f"bench-{uuid.uuid4().hex[:6]}", storage_uri=f"file://{tmp}/store", data_path=str(data)).to_dict()
    # A model big enough that per-step work is realistic on CPU, small enough for a quick run.
    raw["model"].update(d_model=128, n_layers=4, n_heads=4, n_kv_heads=None, max_seq_len=128)
    raw["batch"].update(global_batch_size=16, micro_batch_size=8, seq_len=128)
    raw["schedule"].update(max_steps=steps, warmup_steps=2)
    raw["checkpoint"].update(every_steps=10**6, local_dir=str(tmp / "local"), resume="never")
    raw["early_stop"].update(eval_every_steps=0)
    raw["monitor"].update(tensorboard=False, log_every=10)
    return TrainConfig.from_dict(raw)


def _now() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    return time.perf_counter(), time.process_time()


def _rates(cfg: TrainConfig, t: dict[int, tuple[float, float]]) -> tuple[float, float]:
    """Tokens per wall second and per CPU second between the end of WARMUP and the last step.
    CPU seconds are reported too because this machine is shared: wall time swings with other
    people's load, CPU time per token much less."""
    last = cfg.total_steps()
    tokens = (last - WARMUP) * cfg.batch.global_batch_size * cfg.batch.seq_len
    return tokens / (t[last][0] - t[WARMUP][0]), tokens / (t[last][1] - t[WARMUP][1])


class Clock(Hooks):
    def __init__(self) -> None:
        self.t: dict[int, tuple[float, float]] = {}

    def after_step(self, state: TrainState, loss: float) -> None:
        self.t[state.step] = _now()


def kiln_tokens_per_s(cfg: TrainConfig) -> tuple[float, float]:
    clock = Clock()
    run_training(cfg, hooks=clock)
    return _rates(cfg, clock.t)


def plain_tokens_per_s(cfg: TrainConfig, wrap=None, rank: int = 0, world: int = 1) -> tuple[float, float]:  # noqa: ANN001
    """The baseline: what one would write by hand with PyTorch, same model/data/batch/schedule.
    `wrap` turns the model into its data-parallel form (DistributedDataParallel in bench_trainer_dist)."""
    import contextlib

    splits = read_flat_dataset(Path(cfg.data.path), "train", "val")
    sampler = WindowSampler(splits.train, cfg.batch.seq_len, cfg.data.seed)
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model) if wrap is None else wrap(GPT(cfg.model))
    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                            weight_decay=o.weight_decay)
    mb, total = cfg.batch.micro_batch_size, cfg.total_steps()
    accum = cfg.batch.global_batch_size // (mb * world)
    times: dict[int, tuple[float, float]] = {}
    for step in range(total):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, cfg.optim, cfg.schedule)
        for a in range(accum):
            start = micro_batch_start(step * cfg.batch.global_batch_size, a, rank, world, mb)
            inputs, labels = causal_inputs(sampler.batch(start, mb))
            # DDP all-reduces once per step, on the last micro-batch (no_sync before it)
            last = a == accum - 1 or not hasattr(model, "no_sync")
            with contextlib.nullcontext() if last else model.no_sync():
                loss = F.cross_entropy(model(inputs).flatten(0, 1), labels.flatten()) / accum
                loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times[step + 1] = _now()
    return _rates(cfg, times)


def bench_overhead(tmp: Path, steps: int, rounds: int) -> None:
    data = tmp / "data"
    write_byte_dataset(data, bundled_documents())
    kiln: list[tuple[float, float]] = []
    plain: list[tuple[float, float]] = []
    for r in range(rounds):  # alternate which goes first, so a load change hits both
        pair = [lambda r=r: plain.append(plain_tokens_per_s(bench_config(tmp / f"p{r}", data, steps))),
                lambda r=r: kiln.append(kiln_tokens_per_s(bench_config(tmp / f"k{r}", data, steps)))]
        for run in pair if r % 2 == 0 else pair[::-1]:
            run()
        print(f"  round {r + 1}: plain {plain[-1][0]:,.0f} tok/s ({plain[-1][1]:,.0f} per CPU-s), "
              f"kiln {kiln[-1][0]:,.0f} tok/s ({kiln[-1][1]:,.0f} per CPU-s)", flush=True)
    for i, what in ((0, "wall"), (1, "CPU")):
        best_k, best_p = max(k[i] for k in kiln), max(p[i] for p in plain)
        print(f"1. CPU training, tokens per {what} second over {steps - WARMUP} timed steps, best of {rounds}: "
              f"kiln {best_k:,.0f} vs plain PyTorch {best_p:,.0f} -> time ratio kiln/plain {best_p / best_k:.3f}x "
              f"(lower is better; goal <= 1.10x)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the default (kept for old command lines)")
    ap.add_argument("--long", action="store_true", help="30 steps x 4 rounds (the default is 12 x 3)")
    args = ap.parse_args()
    args.quick = not args.long
    import logging

    logging.basicConfig(level=logging.WARNING)
    # One intra-op thread: on a shared 2-core machine, OpenMP threads spin-waiting for each other
    # make both wall and CPU time swing by several x; one thread keeps the comparison stable.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="kiln-bench-trainer-") as tmp:
        steps, rounds = (12, 3) if args.quick else (30, 4)
        bench_overhead(Path(tmp), steps, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
