"""R9: SIGTERM mid-training (grace 60 s) → an emergency commit at the step the ranks agreed on,
and the run finishes after resuming from it.

Scaled down from 20 SIGTERMs to 4 (2 runs × 2 SIGTERMs each, at random steps): every SIGTERM costs a
DeepSpeed start on resume (~5 s on 2 loaded cores); 20 would take minutes of CI on their own.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from kiln_trainer.train.main import run_training
from trainfaults import Faults, short_config

pytestmark = pytest.mark.timeout(600)
RUNS, SIGTERMS_PER_RUN, STEPS, GRACE_S = 2, 2, 12, 60.0


def test_sigterms_give_emergency_commits_and_every_run_finishes(text_dataset: Path, tmp_path: Path,
                                                               figure: Any) -> None:
    rng = random.Random(9)
    sent = committed = finished = 0
    slowest = 0.0
    for r in range(RUNS):
        cfg = short_config(tmp_path / f"run{r}", text_dataset, steps=STEPS, every=100,
                           faults={"sigterm_grace_seconds": GRACE_S})
        ckpts = tmp_path / f"run{r}" / "store" / "runs" / "t" / "checkpoints"
        done_step = 0
        for _ in range(SIGTERMS_PER_RUN):
            hooks = Faults(sigterm_after=rng.randint(done_step + 1, STEPS - 2))
            out = run_training(cfg, hooks=hooks)
            assert hooks.sigterm_sent_at is not None
            sent += 1
            took = time.monotonic() - hooks.sigterm_sent_at
            slowest = max(slowest, took)
            # Committed at the step all ranks stopped at, within the grace period, and resumable from.
            if out.reason == "preempted" and (ckpts / f"step-{out.state.step:08d}" / "COMMITTED").is_file() \
                    and took < GRACE_S:
                committed += 1
            assert out.state.step > done_step  # it moved on from where it resumed
            done_step = out.state.step
        final = run_training(cfg)
        assert final.history[0]["step"] == done_step + 1  # resumed right after the emergency commit
        finished += final.reason == "completed" and final.state.step == STEPS
    figure(f"R9 {sent} SIGTERMs mid-training (grace {GRACE_S:.0f} s) -> {committed} emergency commits "
           f"(slowest {slowest:.1f} s from SIGTERM to committed and stopped), {finished}/{RUNS} runs finished")
    assert committed >= sent - 0  # every one here; the issue allows 1 miss in 20 at full scale
    assert finished == RUNS
