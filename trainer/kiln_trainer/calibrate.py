"""`python -m kiln_trainer.calibrate`: measure this machine's CPU for `kiln estimate`, cache the result.

Runs the real trainer (one process, DeepSpeed on CPU) for a few steps at two model sizes with the
tiny_cpu batch, takes the median CPU time per step of each after a warm-up, and fits
step seconds = overhead_s + FLOPs per step / flops_per_s through the two points. The peak memory of
the first (tiny_cpu-sized) run, less the estimate's model state and activations for it, becomes
base_memory_bytes. See kiln_api.estimate_calibration for why and how the estimate uses it.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from kiln_api.estimate import Shape, activation_bytes, param_count
from kiln_api.estimate_calibration import Calibration, cpu_device_class, save
from kiln_api.train_config import ModelConfig, TrainConfig
from kiln_api.train_presets import tiny_cpu

WARMUP = 3
SIZES = ({}, {"d_model": 192, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2})
"""tiny_cpu's own model, then one with ~10x its FLOPs per step."""


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM), the figure a run's pod would be limited by."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM")


def model_bytes(cfg: TrainConfig) -> int:
    """What the estimate attributes to the model for this config at fp32, ZeRO-0, one device."""
    psi = param_count(cfg.model)
    return 16 * psi + activation_bytes(Shape(cfg.model, cfg.batch.seq_len), cfg.batch.micro_batch_size, False)


def config(tmp: Path, data: Path, model: dict[str, int], steps: int) -> TrainConfig:
    raw = tiny_cpu(run=f"calibrate-{len(model)}", storage_uri=f"file://{tmp}/store", data_path=str(data)).to_dict()
    raw["model"].update(model)
    # ZeRO-1, as CPU runs use it (examples/tiny.yaml): DeepSpeed's partitioned optimizer step is a
    # large part of a small model's step, and the calibration is of the trainer as it runs.
    raw["zero"]["stage"] = 1
    raw["schedule"].update(max_steps=steps, warmup_steps=2)
    raw["checkpoint"].update(every_steps=10**6, local_dir=str(tmp / f"local-{len(model)}"), resume="never")
    raw["early_stop"].update(eval_every_steps=0)
    raw["monitor"].update(tensorboard=False, log_every=10**6)
    return TrainConfig.from_dict(raw)


def median_step_seconds(cfg: TrainConfig) -> tuple[float, float]:
    """(wall, CPU) seconds of the median step after the warm-up. CPU seconds (this process, all
    threads) are what a step costs on a device of its own; on a shared machine wall time also
    counts the waits for other people's work, which no estimate can know."""
    from kiln_trainer.train.loop import Hooks, TrainState
    from kiln_trainer.train.main import run_training

    stamps: list[tuple[float, float]] = []

    class Clock(Hooks):
        def after_step(self, state: TrainState, loss: float) -> None:
            stamps.append((time.perf_counter(), time.process_time()))

    run_training(cfg, hooks=Clock())
    pairs = list(zip(stamps[WARMUP:], stamps[WARMUP + 1:], strict=False))
    return (statistics.median(b[0] - a[0] for a, b in pairs), statistics.median(b[1] - a[1] for a, b in pairs))


def flops_per_step(cfg: TrainConfig) -> float:
    m: ModelConfig = cfg.model
    return 6.0 * param_count(m) * cfg.batch.global_batch_size * cfg.batch.seq_len


def measure(steps: int = 24) -> Calibration:
    import torch

    from kiln_trainer.train.data import bundled_documents, write_byte_dataset

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    # One intra-op thread, as in the benches: on a small shared machine a second OpenMP thread
    # spin-waits whenever the other core is busy, and the step time swings by several x.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="kiln-calibrate-") as tmp:
        data = Path(tmp) / "data"
        write_byte_dataset(data, bundled_documents())
        points, base = [], 0
        for model in SIZES:
            cfg = config(Path(tmp), data, model, steps)
            points.append((flops_per_step(cfg), median_step_seconds(cfg)[1]))
            if not base:  # the tiny_cpu-sized run: what a tiny run's process holds beyond the model
                base = max(peak_rss_bytes() - model_bytes(cfg), 0)
    (f1, t1), (f2, t2) = points
    slope = (t2 - t1) / (f2 - f1)
    # Noise can make the larger model look no slower: then charge all of its time to FLOPs.
    rate = 1.0 / slope if slope > 0 else f2 / t2
    overhead = max(t1 - f1 / rate, 0.0)
    return Calibration(cpu_device_class(), overhead, rate, base,
                       datetime.now(UTC).replace(microsecond=0).isoformat())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=24, help="timed steps per model size (first 3 are warm-up)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cal = measure(args.steps)
    path = save(cal)
    print(f"calibrated {cal.device_class}: {cal.overhead_s * 1000:.1f} ms/step overhead, "
          f"{cal.flops_per_s / 1e9:.2f} GFLOP/s, base memory {cal.base_memory_bytes / 2**20:.0f} MiB -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
