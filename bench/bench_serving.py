"""Serving throughput: the real tritonserver (CPU) vs in-process generation with the same model code.

Baselines are measured in the same run:
  * one client: wall time of one greedy generation through Triton over gRPC vs the same generation
    with `serving.generate` in this process, measured as alternating pairs; ratio = Triton time /
    in-process time (lower is better, 1.0 = no overhead), geometric mean over the pairs with its 95%
    confidence interval (t distribution on the log ratios); goal: the interval's upper end < 1.15;
  * 8 concurrent clients: aggregate tokens/s vs one Triton client (the batching speed-up);
  * INT8 vs fp32: weight file size ratio (goal <= 0.3) and in-process tokens/s for both INT8 serving
    modes (dequantize at load; torch dynamic INT8 matmul).

Usage: .venv/bin/python bench/bench_serving.py [--long]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from kiln_api.triton_client import GenerateRequest, _inputs
from kiln_trainer.export.fixture import make_checkpoint_tree
from kiln_trainer.export.main import main as export_main
from kiln_trainer.serving.generate import SamplingParams, generate_batch
from kiln_trainer.serving.generate import generate as local_generate
from kiln_trainer.serving.loader import Served, load_version
from kiln_trainer.serving.tritonserver import TritonProcess

# Eight prompts of different lengths: concurrent clients rarely send equal-length prompts, and the
# served model left-pads them into one batch.
PROMPTS = ["the small cat sees the", "the dog", "a red bird finds the blue fish near the", "the tree",
           "the big house near the river", "the fish likes", "the green", "a small dog follows the red cat near"]


def inproc_tps(s: Served, new: int, reps: int, batch: int = 1) -> float:
    prompts = [s.encode(p) for p in PROMPTS[:batch]]
    params = SamplingParams(max_new_tokens=new)  # no stop token: every run makes exactly `new` tokens
    local_generate(s.model, prompts[0], params)  # warm-up
    start, tokens = time.perf_counter(), 0
    for _ in range(reps):
        outs = generate_batch(s.model, prompts, [params] * batch)
        tokens += sum(len(o) for o in outs)
    return tokens / (time.perf_counter() - start)


class StreamClient:
    """One gRPC connection and stream reused for many requests, as a serving client would keep it
    (the CLI's `triton_client.generate` opens a fresh channel per call, which would bill connection
    setup to Triton here)."""

    def __init__(self, url: str) -> None:
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(url)
        self.results: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.results.put((result, error)))

    def generate(self, model: str, req: GenerateRequest) -> list[int]:
        self.client.async_stream_infer(model, _inputs(req))
        result, error = self.results.get(timeout=120)
        if error is not None:
            raise RuntimeError(str(error))
        return [int(t) for t in result.as_numpy("TOKEN_IDS").reshape(-1)]

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def one_client_ratio(s: Served, url: str, model: str, new: int, pairs: int) -> tuple[float, float, float]:
    """Geometric-mean ratio Triton time / in-process time for one generation, and its 95% interval."""
    import math
    import statistics

    from scipy.stats import t as student_t

    prompt = PROMPTS[0]
    params = SamplingParams(max_new_tokens=new)
    ids = s.encode(prompt)
    conn = StreamClient(url)
    try:
        req = GenerateRequest(prompt, max_new_tokens=new)
        conn.generate(model, req)  # warm-up of both sides
        local_generate(s.model, ids, params)
        logs = []
        for i in range(pairs):
            sides = [lambda: local_generate(s.model, ids, params), lambda: conn.generate(model, req)]
            times = []
            for fn in sides if i % 2 == 0 else sides[::-1]:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            t_local, t_triton = times if i % 2 == 0 else times[::-1]
            logs.append(math.log(t_triton / t_local))
    finally:
        conn.close()
    mean, half = statistics.mean(logs), student_t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def triton_tps(url: str, model: str, new: int, reps: int, clients: int) -> float:
    reqs = [GenerateRequest(p, max_new_tokens=new) for p in PROMPTS[:clients]]
    conns = [StreamClient(url) for _ in range(clients)]
    conns[0].generate(model, reqs[0])  # warm-up

    def one_client(i: int) -> int:
        return sum(len(conns[i].generate(model, reqs[i])) for _ in range(reps))

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            tokens = sum(pool.map(one_client, range(clients)))
        return tokens / (time.perf_counter() - start)
    finally:
        for c in conns:
            c.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the default (kept for old command lines)")
    ap.add_argument("--long", action="store_true", help="larger model, more repetitions (the default is the small, ~2-3 min run)")
    args = ap.parse_args()
    args.quick = not args.long
    d_model, layers, new, reps, rounds, pairs = (128, 2, 32, 2, 3, 80) if args.quick else (256, 4, 64, 4, 5, 120)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    # One intra-op thread on both sides: equal footing, and on a small shared machine a spinning
    # second OpenMP thread turns every outside load burst into a stall.
    threads = int(os.environ.get("KILN_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        root = Path(tmp)
        print(f"[bench] model d_model={d_model} layers={layers}; {new} new tokens x {reps} reps", flush=True)
        make_checkpoint_tree(root, run="bench", step=3,
                             model={"d_model": d_model, "n_layers": layers, "n_heads": 4, "n_kv_heads": 4, "max_seq_len": 256})
        cfg = root / "export.json"
        for int8, repo in ((False, "models"), (True, "models8")):  # Triton serves the fp32 repository only
            cfg.write_text(json.dumps({"checkpoints_uri": f"file://{root}/runs/bench/checkpoints",
                                       "model_repository": f"file://{root}/{repo}", "model_name": "bench",
                                       "int8": int8, "max_ppl_increase": 10.0, "hf_export": False}))
            assert export_main(str(cfg)) == 0
        fp = load_version(root / "models/bench/1")
        q_deq = load_version(root / "models8/bench/1", int8_mode="dequant")
        q_dyn = load_version(root / "models8/bench/1", int8_mode="dynamic")
        size_fp = (root / "models/bench/1/weights.safetensors").stat().st_size
        size_q = (root / "models8/bench/1/weights.safetensors").stat().st_size
        with TritonProcess(str(root / "models"), load_models=["bench"],
                           env={"OMP_NUM_THREADS": str(threads)}) as triton:
            # The machine is shared: alternate the measurements over several rounds and keep each
            # one's best, so a burst of outside load does not land on one side of a ratio only.
            cases = {
                "inproc_1": lambda: inproc_tps(fp, new, reps),
                "triton_1": lambda: triton_tps(triton.grpc_url, "bench", new, reps, clients=1),
                "inproc_batch8": lambda: inproc_tps(fp, new, reps, batch=8),
                "triton_8": lambda: triton_tps(triton.grpc_url, "bench", new, reps, clients=8),
                "int8_dequant_1": lambda: inproc_tps(q_deq, new, reps),
                "int8_dynamic_1": lambda: inproc_tps(q_dyn, new, reps),
            }
            one = one_client_ratio(fp, triton.grpc_url, "bench", new, pairs)
            r: dict[str, float] = {k: 0.0 for k in cases}
            for i in range(rounds):
                for name, fn in cases.items():
                    r[name] = max(r[name], fn())
                print(f"[bench] round {i + 1}/{rounds}: " + ", ".join(f"{k} {v:.0f}" for k, v in r.items()), flush=True)
    print("\n== greedy tokens/s (CPU)")
    for k, v in r.items():
        print(f"  {k:16s} {v:9.1f}")
    print(f"\nTriton vs in-process, one client, {pairs} alternating pairs: time ratio Triton/in-process "
          f"{one[0]:.3f}x, 95% CI {one[1]:.3f}-{one[2]:.3f} (lower is better; goal: CI upper end < 1.15: "
          f"{'met' if one[2] < 1.15 else 'MISSED'})")
    print(f"  (best-of-{rounds} tokens/s for reference: overhead {1 - r['triton_1'] / r['inproc_1']:+.1%})")
    print(f"Triton 8 clients vs 1 client: x{r['triton_8'] / r['triton_1']:.2f} "
          f"(in-process batch of 8 vs 1: x{r['inproc_batch8'] / r['inproc_1']:.2f})")
    print(f"INT8 weights / fp32 weights: {size_q / size_fp:.3f} (goal <= 0.3)")
    print(f"INT8 tokens/s vs fp32 in-process: dequant x{r['int8_dequant_1'] / r['inproc_1']:.2f}, "
          f"dynamic x{r['int8_dynamic_1'] / r['inproc_1']:.2f}")


if __name__ == "__main__":
    main()
