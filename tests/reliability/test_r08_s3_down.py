"""R8 (trainer part, no cluster): S3 goes down for 30 s right before a checkpoint save → no
corruption (every committed checkpoint still verifies), and the run either finishes or fails with a
reason naming the checkpoint; started again once S3 is back, it resumes from the newest commit and
completes.

Scaled down: the issue's 5-minute outage and the outages during an export and a rollout are not
run here (CI time, and export/rollout need the cluster's Triton); the 30 s outage exercises the same
path of the store (retries, then CheckpointError) as a longer one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from kiln_trainer.storage import StoreError, open_store
from kiln_trainer.train.commit import CheckpointError, RunCheckpoints
from kiln_trainer.train.main import run_training
from trainfaults import Faults, on_store, short_config

pytestmark = pytest.mark.timeout(600)
OUTAGE_S = 30.0


def _verified(ckpts: RunCheckpoints, dest: Path) -> tuple[list[int], list[int]]:
    """(committed steps, those whose files do not match their manifest)."""
    corrupt = []
    for step in ckpts.committed_steps():
        try:
            ckpts.download(step, ckpts.manifest(step), dest / str(step))
        except CheckpointError:
            corrupt.append(step)
    return ckpts.committed_steps(), corrupt


def test_s3_outage_during_a_save_loses_nothing_and_the_run_resumes(text_dataset: Path, tmp_path: Path,
                                                                    s3_server: Any, figure: Any) -> None:
    boto3.client("s3").create_bucket(Bucket="kiln-r8")
    cfg = on_store(short_config(tmp_path, text_dataset, steps=12, every=4), "s3://kiln-r8/store")
    back = threading.Event()

    def outage() -> None:  # after step 7: the save at step 8 meets a dead server
        s3_server.stop()
        threading.Timer(OUTAGE_S, lambda: (s3_server.start(), back.set())).start()

    t0 = time.monotonic()
    try:
        first = run_training(cfg, hooks=Faults(call_after=(7, outage)))
        result = f"{first.reason} at step {first.state.step}"
    except (CheckpointError, StoreError) as e:  # the trainer's own errors, naming the S3 key
        result = f"failed with {type(e).__name__}: {str(e)[:160]}"
    failed_after = time.monotonic() - t0
    assert back.wait(OUTAGE_S + 30), "the S3 server did not come back"
    ckpts = RunCheckpoints(open_store(cfg.storage_uri), "runs/t/checkpoints")
    committed, corrupt = _verified(ckpts, tmp_path / "verify")
    resumed = run_training(cfg)
    figure(f"R8 S3 down {OUTAGE_S:.0f} s during the save of step 8 -> first attempt {result} "
           f"({failed_after:.0f} s); committed {committed}, {len(corrupt)} corrupt; resumed at step "
           f"{resumed.history[0]['step']} and {resumed.reason} at step {resumed.state.step}")
    assert corrupt == [] and 4 in committed
    assert resumed.reason == "completed" and resumed.state.step == 12
    assert resumed.history[0]["step"] == max(s for s in committed if s < 12) + 1
