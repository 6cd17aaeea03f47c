"""Two-process DeepSpeed runs under torchrun (gloo on CPU): ZeRO-2 and ZeRO-3 learn on real text,
every rank's shards land in the committed manifest, and a ZeRO-3 run resumes from its shards."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kiln_trainer.train.data import bundled_documents, write_byte_dataset

pytestmark = pytest.mark.timeout(400)
ROOT = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(cfg: dict, tmp: Path, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    path = tmp / f"cfg-{cfg['schedule']['max_steps']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(_port()), "-m", "kiln_trainer.train.main", str(path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _config(tmp: Path, stage: int, steps: int) -> dict:
    data = tmp / "data"
    if not data.exists():
        write_byte_dataset(data, bundled_documents())
    return {
        "preset": "tiny_cpu", "run": f"z{stage}", "storage_uri": f"file://{tmp}/store", "data": {"path": str(data)},
        "zero": {"stage": stage}, "schedule": {"max_steps": steps, "warmup_steps": 2},
        "checkpoint": {"every_steps": 8, "local_dir": str(tmp / "local")},
        "monitor": {"log_every": 1, "tensorboard": False}, "early_stop": {"eval_every_steps": 8},
    }


def _records(tmp: Path, run: str) -> list[dict]:
    text = (tmp / "store" / "runs" / run / "metrics" / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("stage", [2, 3])
def test_two_process_zero_learns_and_commits_every_rank(tmp_path: Path, stage: int) -> None:
    _torchrun(_config(tmp_path, stage, steps=16), tmp_path)
    recs = _records(tmp_path, f"z{stage}")
    losses = [r["loss"] for r in recs]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.7, losses
    assert 0.0 < recs[-1]["grad_norm"] < 100.0
    manifest = json.loads((tmp_path / f"store/runs/z{stage}/checkpoints/step-00000016/manifest.json").read_text())
    assert manifest["world_size"] == 2
    names = set(manifest["files"])
    assert {n for n in names if "zero_pp_rank_1_" in n} and {n for n in names if "zero_pp_rank_0_" in n}
    assert {"kiln_rank_00000.pt", "kiln_rank_00001.pt", "model_config.json"} <= names
    if stage == 3:  # resume from the per-rank ZeRO-3 shards and keep learning
        _torchrun(_config(tmp_path, stage, steps=24), tmp_path)
        more = _records(tmp_path, "z3")[16:]
        assert [r["step"] for r in more] == list(range(17, 25))
        assert more[0]["loss"] < losses[0] - 0.7  # started from the trained weights, not from scratch


def test_sigterm_to_torchrun_commits_an_emergency_checkpoint(tmp_path: Path) -> None:
    """Preemption as a pod sees it: SIGTERM to the launcher, which forwards it to both ranks."""
    import signal
    import time

    cfg = _config(tmp_path, 2, steps=100000)
    cfg["checkpoint"]["every_steps"] = 100000
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port()),
           "-m", "kiln_trainer.train.main", str(path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = tmp_path / "store/runs/z2/progress.json"
    deadline = time.monotonic() + 180
    try:
        while not (progress.is_file() and json.loads(progress.read_text())["step"] >= 3):
            assert proc.poll() is None, proc.stderr.read()[-4000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "training did not reach step 3 in 180 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    committed = sorted((tmp_path / "store/runs/z2/checkpoints").glob("step-*/COMMITTED"))
    assert committed, err[-4000:]
    step = int(committed[-1].parent.name.split("-")[1])
    assert step >= 3
    manifest = json.loads((committed[-1].parent / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and "kiln_rank_00001.pt" in manifest["files"]
    assert "emergency checkpoint" in err
