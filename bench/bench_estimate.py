"""`kiln estimate` vs what a tiny_cpu run then measures on this machine.

    DS_ACCELERATOR=cpu .venv/bin/python bench/bench_estimate.py               # cached calibration (~1 min)
    DS_ACCELERATOR=cpu .venv/bin/python bench/bench_estimate.py --calibrate   # re-measure it first (+1-2 min)

The estimate is the one `kiln estimate -f examples/tiny.yaml` prints, calibrated for this CPU
(kiln_api.estimate_calibration; measured once by `python -m kiln_trainer.calibrate` and cached under
~/.cache/kiln/calibration), for the example with `nodes: 1` (one process, as the calibration ran).
The run: the trainer in a fresh process with the example's batch, precision and ZeRO stage on the
tiny_cpu model for 30 steps, one intra-op thread as in the calibration; measured are the median CPU time per step
(what a step costs on a core of its own; wall time is printed too: on a shared machine it also counts
waiting for other people's work) after 3 warm-up steps and the
process's peak resident memory (VmHWM). Ratios = estimate / measured: 1.0 is exact;
goals: step time within 0.8-1.2, memory within 0.9-1.1. Each repetition is a fresh run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import yaml

os.environ.setdefault("DS_ACCELERATOR", "cpu")
ROOT = Path(__file__).resolve().parents[1]


def child(steps: int) -> None:
    """One measured run; prints {"step_s" (CPU), "wall_s", "peak_rss"} as JSON."""
    import torch
    from kiln_api.train_config import TrainConfig
    from kiln_trainer.calibrate import config, median_step_seconds, peak_rss_bytes
    from kiln_trainer.train.data import bundled_documents, write_byte_dataset

    torch.set_num_threads(1)  # as the calibration measured (kiln_trainer.calibrate)
    spec = example_spec()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-est-") as tmp:
        data = Path(tmp) / "data"
        write_byte_dataset(data, bundled_documents())
        raw = config(Path(tmp), data, {}, steps).to_dict()
        t = spec.training
        raw["batch"].update(micro_batch_size=t.micro_batch_size, global_batch_size=t.global_batch_size)
        raw["zero"]["stage"] = t.zero.stage
        wall, cpu = median_step_seconds(TrainConfig.from_dict(raw))
        print(json.dumps({"step_s": cpu, "wall_s": wall, "peak_rss": peak_rss_bytes()}))


def example_spec():  # noqa: ANN201 - a TrainingRunSpec
    from kiln_api.trainingrun import parse_spec

    body = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    spec = parse_spec(body["spec"])
    return replace(spec, training=replace(spec.training, nodes=1))


def measured_run(steps: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", str(steps)], capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                                   os.environ.get("PYTHONPATH")]))})
    if out.returncode != 0:
        raise RuntimeError(f"measured run failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calibrate", action="store_true", help="re-measure the calibration before comparing")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    from kiln_api.estimate import estimate
    from kiln_api.presets import GiB
    from kiln_operator.cli.calibration import cpu_calibration

    cal, note = cpu_calibration(args.calibrate)
    if cal is None:
        raise SystemExit(f"bench_estimate: no calibration: {note}")
    print(f"calibration: {cal.overhead_s * 1000:.1f} ms/step + FLOPs at {cal.flops_per_s / 1e9:.2f} GFLOP/s, "
          f"base memory {cal.base_memory_bytes / 2**20:.0f} MiB; {note}")
    e = estimate(example_spec(), calibration=cal)
    uncal = estimate(example_spec())
    step_r, mem_r = [], []
    for r in range(args.reps):
        m = measured_run(args.steps)
        step_r.append(e.step_seconds / m["step_s"])
        mem_r.append(e.needed / m["peak_rss"])
        print(f"  run {r + 1}: measured {m['step_s'] * 1000:.1f} CPU-ms/step ({m['wall_s'] * 1000:.1f} wall-ms), peak {m['peak_rss'] / 2**20:.0f} MiB "
              f"-> estimate/measured step {step_r[-1]:.2f}, memory {mem_r[-1]:.2f}", flush=True)
    print(f"estimate: {e.step_seconds * 1000:.1f} ms/step, {e.needed / 2**20:.0f} MiB per device "
          f"(uncalibrated peak x MFU: {uncal.step_seconds * 1000:.3f} ms/step, {uncal.needed / GiB:.2f} GiB)")
    for what, rs, lo, hi in (("step time", step_r, 0.8, 1.2), ("memory", mem_r, 0.9, 1.1)):
        ok = all(lo <= x <= hi for x in rs)
        print(f"kiln estimate vs tiny_cpu run, {what}: estimate/measured (1.0 is exact) median "
              f"{statistics.median(rs):.2f}, range {min(rs):.2f}-{max(rs):.2f} over {len(rs)} runs "
              f"(goal {lo}-{hi} every run: {'met' if ok else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
