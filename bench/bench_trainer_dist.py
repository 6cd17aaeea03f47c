"""The trainer in its real layout: 2 processes (torchrun, gloo, DS_ACCELERATOR=cpu) with ZeRO-2 and
ZeRO-3 vs a plain PyTorch DDP loop on the same 2 processes, same model, data, batch and schedule.

    .venv/bin/python bench/bench_trainer_dist.py            # 2 rounds, ~2 min on 2 cores
    .venv/bin/python bench/bench_trainer_dist.py --long     # more steps and rounds

Each case is one `torchrun --nproc_per_node 2` of this file in worker mode; rank 0 reports tokens per
wall second between the end of the warm-up steps and the last step (start-up, DeepSpeed's engine
build and the end checkpoint are outside that window). Cases alternate in rounds so a burst of
outside load does not land on one side only; the best round of each is reported.
Ratio = kiln step time / DDP step time: lower is better, goal <= 1.10x.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

GOAL = 1.10
CASES = ("ddp", "zero2", "zero3")


def worker(mode: str, steps: int, tmp: Path, out: Path) -> None:
    """One rank: run `mode` and (rank 0) write tokens/s to `out`."""
    import torch
    from bench_trainer import Clock, _rates, bench_config
    from kiln_api.train_config import TrainConfig
    from kiln_trainer.train.main import run_training

    torch.set_num_threads(1)  # two ranks on two cores: one intra-op thread each
    rank = int(os.environ["RANK"])
    cfg = bench_config(tmp / mode, tmp / "data", steps)
    if mode == "ddp":
        rates = ddp_loop(cfg)
    else:
        raw = cfg.to_dict()
        # one name on both ranks (bench_config picks a random one), a new one per torchrun (its port)
        raw["run"] = f"bench-{mode}-{os.environ['MASTER_PORT']}"
        raw["zero"]["stage"] = int(mode[-1])
        cfg = TrainConfig.from_dict(raw)
        clock = Clock()
        run_training(cfg, hooks=clock)
        rates = _rates(cfg, clock.t)
    if rank == 0:
        out.write_text(json.dumps({"tokens_per_s": rates[0]}))


def ddp_loop(cfg):  # noqa: ANN001, ANN201 - returns (tokens/wall-s, tokens/CPU-s)
    """What one writes by hand: DistributedDataParallel + AdamW + clip, same LR schedule and data."""
    import torch.distributed as dist
    from bench_trainer import plain_tokens_per_s
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo")
    try:
        return plain_tokens_per_s(cfg, DistributedDataParallel, dist.get_rank(), dist.get_world_size())
    finally:
        dist.destroy_process_group()


def run_case(mode: str, steps: int, tmp: Path) -> float:
    out = tmp / f"{mode}.json"
    out.unlink(missing_ok=True)
    with socket.socket() as sock:  # a free port for the rendezvous (torchrun's port 0 does not reach the ranks)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(Path(__file__).resolve()), "--worker", mode, "--steps", str(steps), "--tmp", str(tmp)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "LOGLEVEL": "WARNING"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{mode} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return float(json.loads(out.read_text())["tokens_per_s"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long", action="store_true", help="30 steps x 4 rounds instead of 12 x 2")
    ap.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.steps, args.tmp, args.tmp / f"{args.worker}.json")
        return 0
    from kiln_trainer.train.data import bundled_documents, write_byte_dataset

    steps, rounds = (30, 4) if args.long else (12, 2)
    best = dict.fromkeys(CASES, 0.0)
    with tempfile.TemporaryDirectory(prefix="kiln-bench-dist-") as tmp:
        write_byte_dataset(Path(tmp) / "data", bundled_documents())
        for r in range(rounds):
            for mode in CASES if r % 2 == 0 else CASES[::-1]:
                best[mode] = max(best[mode], run_case(mode, steps, Path(tmp)))
            print(f"  round {r + 1}: " + ", ".join(f"{m} {v:,.0f} tok/s" for m, v in best.items()), flush=True)
    for mode in CASES[1:]:
        ratio = best["ddp"] / best[mode]
        print(f"2 processes (gloo, CPU), {mode.upper().replace('ZERO', 'ZeRO-')} vs plain DDP, best of {rounds}: "
              f"kiln {best[mode]:,.0f} vs DDP {best['ddp']:,.0f} tok/s -> time ratio kiln/DDP {ratio:.2f}x "
              f"(lower is better; goal <= {GOAL:.2f}x: {'met' if ratio <= GOAL else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
