"""Model presets and accelerator facts for the TrainingRun CRD and the preflight.

Model shapes are not repeated here: a preset name in ``spec.model.preset`` is a function in
``kiln_api.train_presets`` (owned by the trainer side), so the CRD, the estimate and the trainer can
never disagree about what ``gpt_1b`` means.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln_api.train_presets import PRESETS as TRAIN_PRESETS

GiB = 1024**3

MODEL_PRESET_NAMES: tuple[str, ...] = tuple(TRAIN_PRESETS)
"""The names users may write in spec.model.preset (besides custom)."""


@dataclass(frozen=True)
class Accelerator:
    """What the preflight needs to know about one accelerator kind."""

    memory_bytes: int
    """Usable device memory (0 for CPU: the pod's memory limit is used instead)."""
    peak_flops: float
    """Dense bf16/fp16 peak FLOP/s (no sparsity)."""
    price_per_hour: float
    """Default on-demand price in USD per device-hour, used when the spec gives none."""


ACCELERATORS: dict[str, Accelerator] = {
    # Peak figures are the vendors' dense tensor-core numbers; prices are typical list prices.
    "cpu": Accelerator(memory_bytes=0, peak_flops=1.0e12, price_per_hour=0.05),
    "nvidia-l4": Accelerator(memory_bytes=24 * GiB, peak_flops=121e12, price_per_hour=0.8),
    "nvidia-a100-40gb": Accelerator(memory_bytes=40 * GiB, peak_flops=312e12, price_per_hour=1.6),
    "nvidia-a100-80gb": Accelerator(memory_bytes=80 * GiB, peak_flops=312e12, price_per_hour=2.2),
    "nvidia-h100-80gb": Accelerator(memory_bytes=80 * GiB, peak_flops=989e12, price_per_hour=3.0),
    "nvidia-h200-141gb": Accelerator(memory_bytes=141 * GiB, peak_flops=989e12, price_per_hour=4.0),
}
