"""Learning rate as a pure function of the step: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math

from kiln_api.train_config import OptimConfig, ScheduleConfig


def lr_at(step: int, total_steps: int, optim: OptimConfig, sched: ScheduleConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of a run of `total_steps` steps.

    Stateless on purpose: a resumed run recomputes the same value from the step alone, so no
    scheduler state has to survive a checkpoint.
    """
    peak, floor = optim.lr, optim.lr * sched.min_lr_ratio
    if step < sched.warmup_steps:
        return peak * (step + 1) / sched.warmup_steps
    decay_steps = max(1, total_steps - sched.warmup_steps)
    progress = min(1.0, (step - sched.warmup_steps) / decay_steps)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))
