"""The final checkpoint of a run is committed and reported: the last progress record (what
status.progress shows) names the final step, not the last interval step before it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kiln_trainer.train.main import run_training
from trainkit import tiny_config

pytestmark = pytest.mark.timeout(300)


def test_last_progress_record_names_the_final_commit(text_dataset: Path, tmp_path: Path) -> None:
    # 10 steps, a checkpoint every 4, uploads in the background (the default): the save at step 10
    # commits after the step-10 record was written.
    cfg = tiny_config(tmp_path, text_dataset, schedule={"max_steps": 10, "warmup_steps": 2},
                      checkpoint={"every_steps": 4, "async_upload": True}, early_stop={"eval_every_steps": 0})
    seen: list[dict[str, Any]] = []
    out = run_training(cfg, progress=[seen.append])
    assert out.reason == "completed"
    assert (tmp_path / "store/runs/t/checkpoints/latest").read_text() == "step-00000010"
    last = seen[-1]
    assert (last["step"], last["last_committed_step"], last["eta_seconds"]) == (10, 10, 0)
