"""Training against the cluster's real S3 server (MinIO): atomic checkpoints, metrics and progress
land in the bucket, and a second run resumes from the newest committed checkpoint there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kiln_trainer.train.data import bundled_documents, write_byte_dataset

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]


def _run(cluster: Any, cfg: dict, path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "AWS_ENDPOINT_URL": cluster.s3["endpoint_url"],
           "AWS_ACCESS_KEY_ID": cluster.s3["access_key"], "AWS_SECRET_ACCESS_KEY": cluster.s3["secret_key"],
           "AWS_DEFAULT_REGION": "us-east-1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "kiln_trainer.train.main", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return proc


def test_checkpoints_to_minio_and_resume(cluster: Any, s3_bucket: str, tmp_path: Path) -> None:
    write_byte_dataset(tmp_path / "data", bundled_documents())
    cfg = {
        "preset": "tiny_cpu", "run": "s3run", "storage_uri": f"s3://{s3_bucket}/team",
        "data": {"path": str(tmp_path / "data")}, "schedule": {"max_steps": 12, "warmup_steps": 2},
        "checkpoint": {"every_steps": 4, "keep_last": 2, "local_dir": str(tmp_path / "local")},
        "monitor": {"log_every": 2, "tensorboard": False},
    }
    _run(cluster, cfg, tmp_path / "a.yaml")
    s3 = cluster.s3_client()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="team/")["Contents"]}
    ck = "team/runs/s3run/checkpoints"
    committed = sorted(k.split("/")[-2] for k in keys if k.endswith("/COMMITTED"))
    assert committed == ["step-00000008", "step-00000012"]  # keep_last=2 pruned step 4
    latest = s3.get_object(Bucket=s3_bucket, Key=f"{ck}/latest")["Body"].read().decode()
    assert latest == "step-00000012"
    manifest = json.loads(s3.get_object(Bucket=s3_bucket, Key=f"{ck}/step-00000012/manifest.json")["Body"].read())
    for name, meta in manifest["files"].items():
        head = s3.head_object(Bucket=s3_bucket, Key=f"{ck}/step-00000012/{name}")
        assert head["ContentLength"] == meta["size"]
    progress = json.loads(s3.get_object(Bucket=s3_bucket, Key="team/runs/s3run/progress.json")["Body"].read())
    assert progress["step"] == 12 and progress["tokens"] == 12 * 8 * 64
    assert "team/runs/s3run/metrics/metrics.jsonl" in keys

    # A resumed run with a bigger budget continues from step 12 in S3 (the local copy is gone).
    import shutil

    shutil.rmtree(tmp_path / "local")
    cfg["schedule"]["max_steps"] = 16
    proc = _run(cluster, cfg, tmp_path / "b.yaml")
    assert "resumed from runs/s3run/checkpoints/step-00000012" in proc.stderr
    latest = s3.get_object(Bucket=s3_bucket, Key=f"{ck}/latest")["Body"].read().decode()
    assert latest == "step-00000016"
