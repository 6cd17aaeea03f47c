"""Checkpoint upload to S3 and the training stall it causes; baselines measured in the same run.

    DS_ACCELERATOR=cpu .venv/bin/python bench/bench_checkpoint.py          # 128 MiB, 5 rounds (~1 min)
    DS_ACCELERATOR=cpu .venv/bin/python bench/bench_checkpoint.py --long   # 512 MiB

S3 server: a private versitygw (the dev cluster's S3 server, posix backend, from
~/.cache/kiln/bin/current; `make cluster-build` builds it) on a free port with a temporary folder,
started and stopped by this bench; the dev cluster need not run.

1. Upload: `RunCheckpoints.upload_part` (what every rank runs: sha256 of each file computed beside
   the upload, the part record last) vs boto3's default `upload_file` of the same files one after
   another with a default client and no hashing. Rounds alternate which goes first.
   Ratio = kiln MiB/s / boto3 MiB/s: higher is better, goal >= 1.0 (min and median of the rounds).
2. Training stall per checkpoint: a training run writing its checkpoints to that S3 server; the step
   loop waits only for the local save, the upload runs beside the next steps. Reported: the stall
   per checkpoint (what the step loop waited for), mean and max.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

GOAL = 1.0
VERSITYGW = Path.home() / ".cache/kiln/bin/current/versitygw"


@contextmanager
def versitygw(root: Path) -> Iterator[dict[str, str]]:
    """A private versitygw on a free port; yields the AWS_* environment that reaches it."""
    from kiln_devcluster.s3server import Layout, argv

    binary = VERSITYGW
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    layout = Layout(root)
    layout.ensure()
    access, secret = "bench", secrets.token_hex(16)
    proc = subprocess.Popen(argv(binary, layout, port, access, secret), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # up once it answers HTTP (an unsigned request gets 403)
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode()[-2000:] if proc.stderr else ''
                    raise RuntimeError(f"versitygw did not start: {err}") from None
                time.sleep(0.1)
        yield {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret,
               "AWS_DEFAULT_REGION": "us-east-1"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_upload(tmp: Path, bucket: str, size_mb: int, n_files: int, rounds: int) -> None:
    import boto3
    from botocore.config import Config
    from kiln_trainer.storage import open_store
    from kiln_trainer.train.commit import RunCheckpoints

    files = []
    for i in range(n_files):  # like one rank's ZeRO shard files: a few large ones
        p = tmp / f"shard-{i}.pt"
        p.write_bytes(os.urandom(size_mb * 2**20 // n_files))
        files.append(p)
    total = sum(p.stat().st_size for p in files) / 2**20
    client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
    ckpts = RunCheckpoints(open_store(f"s3://{bucket}/kiln"), "runs/b/checkpoints")

    def baseline(r: int) -> float:
        t0 = time.perf_counter()
        for p in files:
            client.upload_file(str(p), bucket, f"baseline/{r}/{p.name}")
        return time.perf_counter() - t0

    def kiln(r: int) -> float:
        t0 = time.perf_counter()
        ckpts.upload_part(r + 1, 0, "a", files)
        return time.perf_counter() - t0

    ratios = []
    for r in range(rounds):
        sides = [baseline, kiln] if r % 2 == 0 else [kiln, baseline]
        t = {fn.__name__: fn(r) for fn in sides}
        ratios.append(t["baseline"] / t["kiln"])
        print(f"  round {r + 1}: kiln {total / t['kiln']:.0f} MiB/s, boto3 upload_file {total / t['baseline']:.0f} MiB/s "
              f"-> {ratios[-1]:.2f}x", flush=True)
    print(f"1. checkpoint upload, {total:.0f} MiB in {n_files} files, {rounds} rounds: kiln/boto3 MiB/s "
          f"(higher is better) min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x "
          f"(goal >= {GOAL:.1f}x: {'met' if min(ratios) >= GOAL else 'median ' + ('met' if statistics.median(ratios) >= GOAL else 'MISSED')})")


def bench_stall(tmp: Path, bucket: str, steps: int) -> None:
    import torch
    from bench_trainer import bench_config
    from kiln_api.train_config import TrainConfig
    from kiln_trainer.train.data import bundled_documents, write_byte_dataset
    from kiln_trainer.train.main import run_training

    torch.set_num_threads(1)  # as bench_trainer: a spinning second OpenMP thread on a shared machine
    data = tmp / "data"
    write_byte_dataset(data, bundled_documents())
    raw = bench_config(tmp / "stall", data, steps).to_dict()
    raw["storage_uri"] = f"s3://{bucket}/stall"
    raw["checkpoint"]["every_steps"] = 4
    raw["monitor"]["log_every"] = 1
    out = run_training(TrainConfig.from_dict(raw))
    rows = [r for r in out.history if "step" in r]
    stalls = [r["ckpt_stall_s"] for r in rows if "ckpt_stall_s" in r]
    print(f"2. training stall per checkpoint (upload to S3 beside the next steps): mean {1000 * statistics.mean(stalls):.0f} ms, "
          f"max {1000 * max(stalls):.0f} ms over {len(stalls)} checkpoints")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long", action="store_true", help="512 MiB instead of 128 MiB")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    if not VERSITYGW.is_file():  # like the other benches' optional parts: say so, let `make bench` go on
        print(f"checkpoint upload and stall: skipped ({VERSITYGW} is missing; `make cluster-build` builds it)")
        return 0
    with tempfile.TemporaryDirectory(prefix="kiln-bench-ckpt-") as tmp, versitygw(Path(tmp) / "s3") as env:
        os.environ.update(env)
        import boto3
        from botocore.config import Config

        bucket = f"kiln-bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", config=Config(s3={"addressing_style": "path"})).create_bucket(Bucket=bucket)
        work = Path(tmp) / "work"
        work.mkdir()
        bench_upload(work, bucket, 512 if args.long else 128, 4, args.rounds)
        shutil.rmtree(Path(tmp) / "s3" / "posix" / bucket / "baseline", ignore_errors=True)
        bench_stall(work, bucket, 16)
    return 0


if __name__ == "__main__":
    sys.exit(main())
