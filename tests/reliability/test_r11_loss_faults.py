"""R11: a NaN loss and a 10× loss spike are skipped / rolled back and the run still completes; a
spike before the first checkpoint restores the weights the run started from (it used to keep the
spiked ones: nothing was committed to roll back to)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from kiln_trainer.train.main import run_training
from trainfaults import Faults, short_config

pytestmark = pytest.mark.timeout(600)
SPIKE = {"spike_factor": 3.0, "spike_window": 3}


def test_nan_and_spike_are_skipped_and_rolled_back(text_dataset: Path, tmp_path: Path, figure: Any) -> None:
    cfg = short_config(tmp_path, text_dataset, steps=12, every=4, faults=SPIKE)
    out = run_training(cfg, hooks=Faults(nan_at=2, spike_at=9))
    ckpts = tmp_path / "store" / "runs" / "t" / "checkpoints"
    figure(f"R11 NaN at step 3 and 10x spike at step 10 -> {out.state.nonfinite_steps} step skipped, "
           f"{out.state.rollbacks} rollback, run {out.reason} at step {out.state.step}")
    assert (out.state.nonfinite_steps, out.state.rollbacks, out.reason) == (1, 1, "completed")
    assert (ckpts / "latest").read_text() == "step-00000012"


def test_spike_before_the_first_checkpoint_restores_the_initial_weights(text_dataset: Path, tmp_path: Path,
                                                                       figure: Any) -> None:
    cfg = short_config(tmp_path, text_dataset, steps=8, every=8, faults=SPIKE)
    hooks = Faults(spike_at=4)
    out = run_training(cfg, hooks=hooks)
    assert out.state.rollbacks == 1 and out.reason == "completed"
    start, after_rollback = hooks.at_step0  # step 0 began twice: at the start and after the rollback
    diff = float((start - after_rollback).abs().max())
    figure(f"R11 10x spike at step 5, before the first checkpoint -> weights when training restarted differ "
           f"from the initial ones by max |w - w0| = {diff:.3g} (0 = restored), run {out.reason}")
    assert torch.equal(start, after_rollback)
