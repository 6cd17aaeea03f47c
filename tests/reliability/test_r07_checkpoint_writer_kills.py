"""R7: the checkpoint writer SIGKILLed at random points → every load is a whole committed
checkpoint (0 partial loads) and at least 2 commits are kept.

The writer (ckptwriter.py) runs kiln's commit protocol step after step; after each kill a reader
loads the newest valid checkpoint the way a resuming trainer does (`fetch_newest_valid`) and
compares every file with the bytes of that step. Against both stores kiln supports: a local folder
and S3 (a private versitygw, the dev cluster's server, so If-None-Match is the real one).

Scaled down from 200 kills to 30 (local folder) + 15 (S3): each kill costs a Python start of the
writer and a verified download (~1 s local, ~3 s S3 on 2 loaded cores); the suite must stay within
a few minutes of CI.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from ckptwriter import KEEP_LAST, expected_files
from kiln_trainer.storage import open_store
from kiln_trainer.train.commit import RunCheckpoints

pytestmark = pytest.mark.timeout(600)
KILLS = {"file": 30, "s3": 15}
WRITER = Path(__file__).parent / "ckptwriter.py"


def _kill_at_random(uri: str, env: dict[str, str], rng: random.Random) -> None:
    proc = subprocess.Popen([sys.executable, str(WRITER), uri, "runs/r7/checkpoints"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    assert ready.strip() == b"ready", (ready, proc.stderr.read() if proc.stderr else b"")
    time.sleep(rng.uniform(0.0, 1.5))  # anywhere inside one to several saves
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _check_load(ckpts: RunCheckpoints, dest: Path) -> tuple[int | None, bool]:
    """(newest loadable step, whether what was loaded is exactly that step's files)."""
    found = ckpts.fetch_newest_valid(lambda s: dest / f"step-{s}")
    if found is None:
        return None, True
    step, manifest = found
    want = expected_files(step)
    got = {p.name: p.read_bytes() for p in (dest / f"step-{step}").iterdir()}
    return step, set(manifest["files"]) == set(want) and got == want


@pytest.mark.parametrize("store", ["file", "s3"])
def test_killed_writer_never_leaves_a_partial_checkpoint(store: str, tmp_path: Path, request: Any,
                                                        figure: Any) -> None:
    uri = f"file://{tmp_path}/store"
    if store == "s3":
        request.getfixturevalue("s3_server")  # sets AWS_* for this process and the writers
        uri = "s3://kiln-r7/"
        boto3.client("s3").create_bucket(Bucket="kiln-r7")
    env = dict(os.environ)
    rng = random.Random(7)
    ckpts = RunCheckpoints(open_store(uri), "runs/r7/checkpoints")
    partial, newest, loads = 0, 0, 0
    for i in range(KILLS[store]):
        _kill_at_random(uri, env, rng)
        step, whole = _check_load(ckpts, tmp_path / f"load-{i}")
        if step is not None:
            loads += 1
            partial += 0 if whole else 1
            assert step >= newest, f"kill {i}: newest loadable step went back from {newest} to {step}"
            newest = step
    kept = ckpts.committed_steps()
    figure(f"R7 {store}: {KILLS[store]} SIGKILLs of the checkpoint writer at random points -> {partial} partial loads "
           f"in {loads} loads, newest committed step {newest}, {len(kept)} commits kept (keep_last={KEEP_LAST})")
    assert partial == 0
    assert len(kept) >= 2 and newest >= 2
