"""Trainer benchmarks: each figure is a ratio against a baseline measured in the same run.

    DS_ACCELERATOR=cpu .venv/bin/python bench/bench_trainer.py --quick   # ~1-2 minutes on 2 cores
    DS_ACCELERATOR=cpu .venv/bin/python bench/bench_trainer.py

1. CPU step throughput: the kiln trainer (DeepSpeed ZeRO-0 engine, gloo, sinks, the per-step
   all-reduce, the end checkpoint excluded) vs a plain PyTorch loop (torch AdamW, clip, same LR
   schedule) on the same model, data windows, micro-batch and accumulation. Goal: overhead <= 10%.
   Both runs alternate in rounds so machine noise hits both; the best round of each is reported.
   One intra-op thread for both (the machine is shared; see main()).
2. Checkpoint upload: `RunCheckpoints.upload_part` (parallel files, each a multipart upload) vs
   boto3's default `upload_file` of the same files one after another, to the same S3 server (the
   embedded cluster's MinIO, from .kiln/s3.env or AWS_* env). Skipped when no S3 server is up.
   Also reported: the training stall per checkpoint (local save only; upload runs in the background).
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


def plain_tokens_per_s(cfg: TrainConfig) -> tuple[float, float]:
    """The baseline: what one would write by hand with PyTorch, same model/data/batch/schedule."""
    splits = read_flat_dataset(Path(cfg.data.path), "train", "val")
    sampler = WindowSampler(splits.train, cfg.batch.seq_len, cfg.data.seed)
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model)
    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                            weight_decay=o.weight_decay)
    mb, accum, total = cfg.batch.micro_batch_size, cfg.batch.global_batch_size // cfg.batch.micro_batch_size, cfg.total_steps()
    times: dict[int, tuple[float, float]] = {}
    for step in range(total):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, cfg.optim, cfg.schedule)
        for a in range(accum):
            inputs, labels = causal_inputs(sampler.batch(micro_batch_start(step * cfg.batch.global_batch_size, a, 0, 1, mb), mb))
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
              f"kiln {best_k:,.0f} vs plain PyTorch {best_p:,.0f} -> ratio {best_k / best_p:.3f} "
              f"(overhead {best_p / best_k - 1.0:+.1%}, goal <= +10%)")


def _s3_env() -> dict[str, str] | None:
    if os.environ.get("AWS_ENDPOINT_URL"):
        return {}
    env_file = Path(os.environ.get("KILN_STATE_DIR", Path(__file__).resolve().parents[1] / ".kiln")) / "s3.env"
    if not env_file.is_file():
        return None
    pairs = (line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if k.strip().startswith("AWS_")}


def bench_upload(tmp: Path, size_mb: int, n_files: int, rounds: int) -> None:
    env = _s3_env()
    if env is None:
        print("2. checkpoint upload: skipped (no S3 server: start one with `make cluster-up`)")
        return
    os.environ.update(env)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import boto3
    from botocore.config import Config
    from kiln_trainer.storage import open_store
    from kiln_trainer.train.commit import RunCheckpoints

    client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
    bucket = f"kiln-bench-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    files = []
    for i in range(n_files):
        p = tmp / f"shard-{i}.pt"
        p.write_bytes(os.urandom(size_mb * 2**20 // n_files))
        files.append(p)
    total = sum(p.stat().st_size for p in files) / 2**20
    try:
        ckpts = RunCheckpoints(open_store(f"s3://{bucket}/kiln"), "runs/b/checkpoints", concurrency=8)

        def baseline(r: int) -> float:
            t0 = time.perf_counter()
            for p in files:
                client.upload_file(str(p), bucket, f"baseline/{r}/{p.name}")
            return time.perf_counter() - t0

        def kiln(r: int) -> float:
            t0 = time.perf_counter()
            ckpts.upload_part(r + 1, 0, "a", files)
            return time.perf_counter() - t0

        base, ours = [], []
        for r in range(rounds):  # alternate the order; the best round of each is reported
            if r % 2 == 0:
                base.append(baseline(r))
                ours.append(kiln(r))
            else:
                ours.append(kiln(r))
                base.append(baseline(r))
        b, o = min(base), min(ours)
        print(f"2. checkpoint upload of {total:.0f} MiB in {n_files} files, best of {rounds}: kiln {total / o:.0f} MiB/s "
              f"(incl. sha256) vs boto3 upload_file {total / b:.0f} MiB/s -> ratio {b / o:.2f}x (goal >= 1.0x)")
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)


def bench_stall(tmp: Path) -> None:
    data = tmp / "data"
    cfg = bench_config(tmp / "stall", data, steps=8)
    raw = cfg.to_dict()
    raw["checkpoint"]["every_steps"] = 2
    raw["monitor"]["log_every"] = 2
    out = run_training(TrainConfig.from_dict(raw))
    stalls = [r["ckpt_stall_s"] for r in out.history if "ckpt_stall_s" in r]
    print(f"3. training stall per checkpoint (local save; upload in background): "
          f"mean {1000 * sum(stalls) / len(stalls):.0f} ms over {len(stalls)} checkpoints")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds, smaller upload")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    # One intra-op thread: on a shared 2-core machine, OpenMP threads spin-waiting for each other
    # make both wall and CPU time swing by several x; one thread keeps the comparison stable.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="kiln-bench-trainer-") as tmp:
        steps, rounds = (12, 3) if args.quick else (30, 4)
        bench_overhead(Path(tmp), steps, rounds)
        bench_stall(Path(tmp))
        bench_upload(Path(tmp), size_mb=128 if args.quick else 512, n_files=4, rounds=rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
