"""Fault-injecting hooks and short configs for the trainer reliability tests (R9, R11)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from kiln_api.train_config import TrainConfig
from kiln_trainer.train.loop import Hooks, TrainState
from trainkit import tiny_config


def short_config(tmp: Path, data: Path, steps: int, every: int, **over: dict[str, Any]) -> TrainConfig:
    """tiny_cpu for `steps` steps with a checkpoint every `every`, synchronous uploads."""
    sections: dict[str, dict[str, Any]] = {
        "schedule": {"max_steps": steps, "warmup_steps": 2},
        "checkpoint": {"every_steps": every, "async_upload": False},
        "early_stop": {"eval_every_steps": 0}, "faults": {"spike_factor": 0.0},
    }
    for k, v in over.items():
        sections[k] = {**sections.get(k, {}), **v}
    return tiny_config(tmp, data, **sections)


def on_store(cfg: TrainConfig, uri: str) -> TrainConfig:
    """The same config with its checkpoints and metrics in `uri` (e.g. s3://bucket/prefix)."""
    raw = cfg.to_dict()
    raw["storage_uri"] = uri
    return TrainConfig.from_dict(raw)


def weights(engine: Any) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in engine.module.parameters()])


class Faults(Hooks):
    """SIGTERM after a step, a NaN or a ×`spike` loss at a step (each once), and weight snapshots
    taken whenever step 0 starts (the run's start, and again after a rollback to the beginning)."""

    def __init__(self, sigterm_after: int | None = None, nan_at: int | None = None,
                 spike_at: int | None = None, spike: float = 10.0,
                 call_after: tuple[int, Callable[[], None]] | None = None) -> None:
        self.sigterm_after, self.nan_at, self.spike_at, self.spike = sigterm_after, nan_at, spike_at, spike
        self.sigterm_sent_at: float | None = None
        self.call_after = call_after  # (step, what to do once that step ended), e.g. stop S3
        self.at_step0: list[torch.Tensor] = []

    def on_loss(self, step: int, micro: int, loss: torch.Tensor) -> torch.Tensor:
        if step == 0 and micro == 0:
            self.at_step0.append(weights(self.engine))
        if step == self.nan_at and micro == 0:
            self.nan_at = None
            return loss * float("nan")
        if step == self.spike_at:
            self.spike_at = None
            return loss * self.spike
        return loss

    def after_step(self, state: TrainState, loss: float) -> None:
        if self.call_after is not None and state.step == self.call_after[0]:
            self.call_after[1]()
        if state.step == self.sigterm_after and self.sigterm_sent_at is None:
            self.sigterm_sent_at = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)
