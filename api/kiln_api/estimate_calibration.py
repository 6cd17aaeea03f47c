"""A measured calibration of the estimate for one device class (kiln_api.estimate).

Why: a fixed peak FLOP/s and MFU say nothing about small models on a CPU, where a training step is
mostly framework time (Python, DeepSpeed, gloo) and the process's own memory (torch, DeepSpeed) dwarfs
the model's. So the trainer measures, once per device class (`python -m kiln_trainer.calibrate`):

    step seconds ≈ overhead_s + FLOPs per step per device / flops_per_s

from timed steps of the real trainer at two model sizes, and `base_memory_bytes`, the trainer
process's peak memory minus what the estimate attributes to the model state and activations. The
result is cached as JSON under ~/.cache/kiln/calibration/ by device class; `kiln estimate` uses it
when it is there. No torch here: measuring is the trainer's job.
"""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Calibration:
    """What one device class measured."""

    device_class: str
    """e.g. "cpu/AMD EPYC 7B13/2": accelerator kind, model name, logical cores."""
    overhead_s: float
    """Seconds per optimizer step that do not grow with the model's FLOPs."""
    flops_per_s: float
    """Training FLOP/s (6·N·tokens per second) achieved by one device beyond that overhead."""
    base_memory_bytes: int
    """Peak memory of a trainer process beyond the estimate's model state and activations."""
    measured_at: str
    """RFC 3339 time of the measurement."""

    def step_seconds(self, flops_per_step_per_device: float) -> float:
        return self.overhead_s + flops_per_step_per_device / self.flops_per_s

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Calibration:
        try:
            cal = cls(device_class=str(raw["device_class"]), overhead_s=float(raw["overhead_s"]),
                      flops_per_s=float(raw["flops_per_s"]), base_memory_bytes=int(raw["base_memory_bytes"]),
                      measured_at=str(raw["measured_at"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"calibration: missing or malformed field {e}") from e
        if cal.flops_per_s <= 0 or cal.overhead_s < 0 or cal.base_memory_bytes < 0:
            raise ValueError(f"calibration: flops_per_s must be > 0, overhead_s and base_memory_bytes >= 0: {raw}")
        return cal


def cpu_device_class() -> str:
    """This machine's CPU as a device class: same model and core count, same calibration."""
    model = platform.processor() or platform.machine()
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        if m:
            model = m.group(1).strip()
    except OSError:
        pass
    return f"cpu/{model}/{os.cpu_count() or 1}"


def cache_dir() -> Path:
    return Path(os.environ.get("KILN_CACHE_DIR", Path.home() / ".cache" / "kiln")) / "calibration"


def cache_path(device_class: str) -> Path:
    return cache_dir() / (re.sub(r"[^A-Za-z0-9._-]+", "_", device_class) + ".json")


def load_cached(device_class: str) -> Calibration | None:
    """The cached calibration of `device_class`, or None when it was never measured here."""
    path = cache_path(device_class)
    if not path.is_file():
        return None
    return Calibration.from_dict(json.loads(path.read_text()))


def save(cal: Calibration) -> Path:
    path = cache_path(cal.device_class)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(cal.to_json())
    tmp.replace(path)
    return path


def estimate_vs_actual(status: dict[str, Any]) -> dict[str, Any]:
    """status.estimate with the measured step time beside the estimated one, for the end of training.

    Measured = tokens per step / tokens per second of the trainer's last progress record (the whole
    gang's throughput over its last logging window). Unchanged when either side is missing."""
    est = dict(status.get("estimate") or {})
    progress = status.get("progress") or {}
    step, tokens, tps = progress.get("step"), progress.get("tokens"), progress.get("tokensPerSecond")
    if not (step and tokens and tps):
        return est
    actual = tokens / step / tps
    est["actualStepSeconds"] = actual
    if est.get("stepSeconds"):
        est["stepRatio"] = est["stepSeconds"] / actual
    return est
