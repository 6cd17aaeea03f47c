"""Rollout under load: failed requests and p99 latency during an in-place version swap, against the
same load with no swap (the baseline, measured in the same run); and the time from "version
exported" to "version serving" (canary start → gate → promotion).

Usage: .venv/bin/python bench/bench_rollout.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kiln_api.triton_client import GenerateRequest, generate
from kiln_operator.serving.promote import promote_pod, version_ready
from kiln_trainer.export.fixture import make_checkpoint_tree
from kiln_trainer.export.main import main as export_main
from kiln_trainer.serving.tritonserver import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from kilnflow import Load  # noqa: E402

MODEL = "llm"


def export_versions(tmp: Path) -> Path:
    for version, (run, steps) in enumerate((("a", 20), ("b", 8)), start=1):
        ckpts = make_checkpoint_tree(tmp / "ck", run=run, step=steps)
        cfg = tmp / f"export-{run}.json"
        cfg.write_text(json.dumps({"checkpoints_uri": f"file://{ckpts}", "model_repository": f"file://{tmp}/models",
                                   "model_name": MODEL, "version": version, "reference_prompts": ["the cat sees"],
                                   "reference_max_new_tokens": 8, "hf_export": False}))
        if export_main(str(cfg)) != 0:
            raise SystemExit("export failed")
    return tmp / "models"


def serve(repo: Path, version: int, log: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    http, grpc = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiln_trainer.cli", "serve", "--repository", f"file://{repo}", "--model", MODEL,
         "--version", str(version), "--http-port", str(http), "--grpc-port", str(grpc),
         "--metrics-port", str(free_port())],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    deadline = time.monotonic() + 300
    while not version_ready(f"127.0.0.1:{http}", MODEL, version):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"serve v{version} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return proc, http, grpc


def p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(0.99 * len(s)))] * 1000 if s else float("nan")


def window(url: str, seconds: float, clients: int, swap: tuple[str, int] | None) -> Load:
    with Load(url, MODEL, clients=clients) as load:
        time.sleep(seconds / 2)
        if swap is not None:
            promote_pod(swap[0], MODEL, swap[1])
        time.sleep(seconds / 2)
    return load


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    seconds = 12.0 if args.quick else 40.0
    with tempfile.TemporaryDirectory(prefix="kiln-bench-rollout-") as d:
        tmp = Path(d)
        repo = export_versions(tmp)
        proc, http, grpc = serve(repo, 1, tmp / "serving.log")
        url = f"127.0.0.1:{grpc}"
        try:
            base = window(url, seconds, args.clients, None)
            swap = window(url, seconds, args.clients, (f"127.0.0.1:{http}", 2))
            # Export committed → serving: canary start, gate, promotion (the swap back to v1 here).
            t0 = time.monotonic()
            canary, c_http, c_grpc = serve(repo, 1, tmp / "canary.log")
            ok = generate(f"127.0.0.1:{c_grpc}", MODEL, GenerateRequest(prompt="the cat sees", max_new_tokens=8),
                          version=1).token_ids
            gate = subprocess.run([sys.executable, "-m", "kiln_trainer.cli", "gate", "--repository", f"file://{repo}",
                                   "--model", MODEL, "--version", "1", "--url", f"127.0.0.1:{c_grpc}"],
                                  capture_output=True, text=True)
            promote_pod(f"127.0.0.1:{http}", MODEL, 1)
            to_serving = time.monotonic() - t0
            canary.terminate()
            canary.wait(timeout=60)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"load: {args.clients} concurrent gRPC clients, greedy 8 tokens, {seconds:.0f}s per window")
    print(f"no swap  : {base.ok} ok, {len(base.failures)} failed, p99 {p99(base.latencies):.0f} ms")
    print(f"with swap: {swap.ok} ok, {len(swap.failures)} failed, p99 {p99(swap.latencies):.0f} ms")
    print(f"p99 ratio swap/no-swap: {p99(swap.latencies) / p99(base.latencies):.2f}x  (goal: 0 failed requests)")
    print(f"export committed → serving (canary + gate {'pass' if gate.returncode == 0 else 'FAIL'} + promote): "
          f"{to_serving:.1f}s  (goal < 60 s){'' if ok else ' [canary gave no tokens]'}")
    if swap.failures:
        print("failures:", swap.failures[:3])


if __name__ == "__main__":
    main()
