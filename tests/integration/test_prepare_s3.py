"""`kiln-trainer prepare` against the cluster's S3 server: s3:// sources to s3:// output.

Two shard processes run in parallel (as the pods of an Indexed Job would, with
JOB_COMPLETION_INDEX), then a merge; the token stream must equal a single-process run's.
Bad credentials and a missing bucket must fail with a clear error, not an empty dataset.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kiln_api.contract import EXIT_BAD_CONFIG
from kiln_trainer.data import tinycorpus

pytestmark = pytest.mark.timeout(300)


def _env(cluster: Any, **over: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "AWS_ENDPOINT_URL": cluster.s3["endpoint_url"], "AWS_ACCESS_KEY_ID": cluster.s3["access_key"],
        "AWS_SECRET_ACCESS_KEY": cluster.s3["secret_key"], "AWS_DEFAULT_REGION": "us-east-1",
    })
    env.pop("JOB_COMPLETION_INDEX", None)
    env.update(over)
    return env


def _upload_corpus(s3: Any, bucket: str) -> None:
    rng = random.Random(11)
    for i in range(3):
        body = "\n\n".join(tinycorpus.paragraph(rng, "en" if i != 1 else "zh") for _ in range(80))
        s3.put_object(Bucket=bucket, Key=f"raw/stories-{i}.txt", Body=body.encode())
    rows = "\n".join(json.dumps({"text": tinycorpus.paragraph(rng, "zh")}, ensure_ascii=False) for _ in range(60))
    s3.put_object(Bucket=bucket, Key="raw/notes.jsonl.gz", Body=gzip.compress(rows.encode(), mtime=0))


def _config(tmp: Path, bucket: str, out_prefix: str, src_bucket: str | None = None) -> Path:
    src = src_bucket or bucket
    cfg = {
        "output": f"s3://{bucket}/{out_prefix}",
        "workers": 2,
        "data": {
            "sources": [
                {"uri": f"s3://{src}/raw/*.txt", "format": "txt", "domain": "stories"},
                {"uri": f"s3://{src}/raw/*.jsonl.gz", "format": "jsonl", "domain": "notes"},
            ],
            "tokenizer": {"vocab_size": 600},
            "packing": {"val_fraction": 0.1, "num_shards": 2},
        },
    }
    path = tmp / f"{out_prefix}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _prepare(cfg: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kiln_trainer.cli", "prepare", "--config", str(cfg), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def _stream(uri: str, cache: Path, env: dict[str, str]) -> dict[str, np.ndarray]:
    from kiln_trainer.data.shards import open_dataset

    old = dict(os.environ)
    os.environ.update({k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                           "AWS_DEFAULT_REGION")})
    try:
        ds = open_dataset(uri, cache_dir=cache)
    finally:
        os.environ.clear()
        os.environ.update(old)
    return {s: np.concatenate([np.asarray(t) for t in ds.tokens(s)]) for s in ("train", "val")}


def test_two_parallel_shards_equal_single_process(cluster: Any, s3_bucket: str, tmp_path: Path) -> None:
    s3 = cluster.s3_client()
    _upload_corpus(s3, s3_bucket)
    env = _env(cluster)

    single_cfg = _config(tmp_path, s3_bucket, "single")
    rc, single_uri, err = _finish(_prepare(single_cfg, env))
    assert rc == 0, err

    sharded_cfg = _config(tmp_path, s3_bucket, "sharded")
    shards = [_prepare(sharded_cfg, _env(cluster, JOB_COMPLETION_INDEX=str(i)), "--num-shards", "2") for i in (0, 1)]
    for p in shards:  # both run at the same time
        rc, _, err = _finish(p)
        assert rc == 0, err
    rc, sharded_uri, err = _finish(_prepare(sharded_cfg, env, "--merge"))
    assert rc == 0, err

    single_uri, sharded_uri = single_uri.strip(), sharded_uri.strip()
    assert single_uri.startswith(f"s3://{s3_bucket}/single/datasets/")
    a = _stream(single_uri, tmp_path / "cache-a", env)
    b = _stream(sharded_uri, tmp_path / "cache-b", env)
    assert len(a["train"]) > 1000 and len(a["val"]) > 0
    assert all(np.array_equal(a[s], b[s]) for s in a)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="sharded/")["Contents"]]
    assert not [k for k in keys if "/parts/" in k]

    # same spec again: reused, not prepared twice
    rc, again, err = _finish(_prepare(single_cfg, env))
    assert rc == 0 and again.strip() == single_uri and "already prepared" in err


def test_missing_buckets_are_clear_errors(cluster: Any, s3_bucket: str, tmp_path: Path) -> None:
    _upload_corpus(cluster.s3_client(), s3_bucket)
    cfg = _config(tmp_path, s3_bucket, "nobucket", src_bucket="kiln-no-such-bucket-4711")
    rc, _, err = _finish(_prepare(cfg, _env(cluster)))
    assert rc == EXIT_BAD_CONFIG and "data.sources[0].uri" in err and "kiln-no-such-bucket-4711" in err, err

    cfg = _config(tmp_path, s3_bucket, "noout")
    cfg.write_text(cfg.read_text().replace(f"output: s3://{s3_bucket}/noout", "output: s3://kiln-no-such-out-4711/x"))
    rc, _, err = _finish(_prepare(cfg, _env(cluster)))
    assert rc == EXIT_BAD_CONFIG and "output: cannot access" in err and "kiln-no-such-out-4711" in err, err


def test_wrong_credentials_are_a_clear_error(cluster: Any, s3_bucket: str, tmp_path: Path) -> None:
    import boto3
    from botocore.exceptions import ClientError

    probe = boto3.client("s3", endpoint_url=cluster.s3["endpoint_url"], aws_access_key_id="nobody",
                         aws_secret_access_key="wrong", region_name="us-east-1")
    try:
        probe.list_objects_v2(Bucket=s3_bucket)
        pytest.skip("this S3 server accepts any credentials (moto without auth): nothing to deny")
    except ClientError:
        pass
    _upload_corpus(cluster.s3_client(), s3_bucket)
    rc, _, err = _finish(_prepare(_config(tmp_path, s3_bucket, "denied"), _env(cluster, AWS_SECRET_ACCESS_KEY="wrong")))
    assert rc == EXIT_BAD_CONFIG and "output: cannot access" in err and "access denied" in err, err
