"""Real nodes: time from `create pod` to Running and to the pod's command having run (kubelet +
containerd + runc, busybox image already imported), against running the same command as a plain
local process (the baseline, measured in the same run; ratio = pod time / local time, higher is slower).

What the ratio covers: API server admission, scheduling, the kubelet's watch, the pod sandbox
(pause container, CNI bridge + host-local IPAM), container create and start, status updates.
Needs the embedded cluster (`make cluster-up`).

Usage: .venv/bin/python bench/bench_node.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from kubernetes import client, config

STATE = Path(__file__).resolve().parents[1] / ".kiln"
COMMAND = ["sh", "-c", "echo ready"]
IMAGE = "kiln.local/busybox:1.35"
"""The busybox every real node imports at `up` (nodeimages.py): no pull is timed."""


def baseline(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(COMMAND, check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def through_cluster(core: client.CoreV1Api, ns: str, n: int) -> tuple[list[float], list[float]]:
    out, running = [], []
    for i in range(n):
        name = f"b{i}"
        body = {"metadata": {"name": name}, "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "Never", "command": COMMAND}]}}
        t0 = time.perf_counter()
        core.create_namespaced_pod(ns, body)
        deadline = t0 + 60
        started = None
        while True:
            pod = core.read_namespaced_pod(name, ns)
            phase = pod.status.phase
            states = pod.status.container_statuses or []
            if started is None and (phase != "Pending" or any(s.state.running or s.state.terminated for s in states)):
                started = time.perf_counter() - t0
            if phase in ("Succeeded", "Failed"):
                break
            if time.perf_counter() > deadline:
                raise SystemExit(f"pod {name} did not finish within 60 s (phase {phase})")
            time.sleep(0.02)
        out.append(time.perf_counter() - t0)
        running.append(started if started is not None else out[-1])
        if phase != "Succeeded":
            raise SystemExit(f"pod {name} failed")
        print(f"  pod {i + 1}/{n}: started {running[-1] * 1000:.0f} ms, done {out[-1] * 1000:.0f} ms", flush=True)
    return out, running


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 pods instead of 10")
    args = ap.parse_args()
    n = 3 if args.quick else 10
    kubeconfig = STATE / "kubeconfig"
    if not kubeconfig.exists():
        print(f"no cluster: {kubeconfig} is missing (run `make cluster-up`)", file=sys.stderr)
        return 2
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    ns = f"bench-node-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    try:
        deadline = time.monotonic() + 60
        while not core.list_namespaced_service_account(ns).items:
            if time.monotonic() > deadline:
                raise SystemExit("default ServiceAccount never appeared")
            time.sleep(0.1)
        base = baseline(n)
        pods, started = through_cluster(core, ns, n)
    finally:
        core.delete_namespace(ns)
    b, p = statistics.median(base), statistics.median(pods)
    print(f"baseline  local process     median {b * 1000:8.1f} ms  (n={n})")
    print(f"real node create->running   median {statistics.median(started) * 1000:8.1f} ms  (n={n})")
    print(f"real node create->done      median {p * 1000:8.1f} ms  (n={n}, max {max(pods) * 1000:.0f} ms)")
    print(f"ratio pod/local process: {p / b:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
