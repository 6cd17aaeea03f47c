"""Reconcile latency: TrainingRun created → its first Job (``<run>-prepare``) exists, p50/p99, with 1,
50 and 200 runs in flight, plus the operator's memory; against the floor — the same objects created
by a plain script through the same API server.

Needs the embedded cluster (`make cluster-up`). Pods are kept from starting by a ResourceQuota of
zero pods in the bench namespace, so only the control plane is measured.

    .venv/bin/python bench/bench_reconcile.py            # 1, 50, 200 runs
    .venv/bin/python bench/bench_reconcile.py --quick    # 1, 10 runs
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from kiln_api.trainingrun import parse_spec
from kiln_operator.builders.common import Run
from kiln_operator.builders.prepare_job import build_prepare_job
from kiln_operator.builders.rbac import build_rbac
from kiln_operator.configmap import build_config_map
from kiln_operator.kube import Kube
from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parents[1]
KUBECONFIG = Path(os.environ.get("KUBECONFIG", REPO / ".kiln" / "kubeconfig"))
GROUP, VERSION, PLURAL = "kiln.dev", "v1alpha1", "trainingruns"


def _api() -> client.ApiClient:
    return config.new_client_from_config(config_file=str(KUBECONFIG))


def _run_body(name: str) -> dict[str, Any]:
    doc = copy.deepcopy(yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text()))
    doc["metadata"] = {"name": name}
    doc["spec"].pop("serving", None)
    return doc  # type: ignore[no-any-return]


class JobWatch:
    """Timestamps (monotonic) of the first sighting of every Job in a namespace."""

    def __init__(self, api: client.ApiClient, ns: str) -> None:
        self.seen: dict[str, float] = {}
        self._w = watch.Watch()
        self._t = threading.Thread(target=self._loop, args=(client.BatchV1Api(api), ns), daemon=True)
        self._t.start()

    def _loop(self, batch: client.BatchV1Api, ns: str) -> None:
        try:
            for ev in self._w.stream(batch.list_namespaced_job, ns, timeout_seconds=0):
                self.seen.setdefault(ev["object"].metadata.name, time.monotonic())
        except Exception:  # noqa: BLE001 - the stream is cut when the namespace goes; results are taken by then
            return

    def stop(self) -> None:
        self._w.stop()


def _namespace(core: client.CoreV1Api, prefix: str) -> str:
    ns = f"{prefix}-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns}})
    # No pods: the bench measures the operator and the API server, not the node.
    core.create_namespaced_resource_quota(ns, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
    return ns


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def measure_operator(api: client.ApiClient, n: int, deadline: float) -> tuple[list[float], float]:
    core = client.CoreV1Api(api)
    ns = _namespace(core, "bench-op")
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG), "KILN_NAMESPACE": ns, "KILN_METRICS_PORT": "0",
           "KILN_LOG_LEVEL": "WARNING"}
    op = subprocess.Popen([sys.executable, "-m", "kiln_operator.main"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    jobs = JobWatch(api, ns)
    custom = client.CustomObjectsApi(api)
    try:
        time.sleep(3)  # let kopf list-and-watch before the burst (startup is not what we measure)
        created: dict[str, float] = {}
        for i in range(n):
            name = f"r{i:03d}"
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _run_body(name))
            created[name] = time.monotonic()
        end = time.monotonic() + deadline
        while time.monotonic() < end and not all(f"{r}-prepare" in jobs.seen for r in created):
            time.sleep(0.2)
        missing = [r for r in created if f"{r}-prepare" not in jobs.seen]
        if missing:
            raise SystemExit(f"{len(missing)} of {n} runs got no prepare Job in {deadline:.0f}s (e.g. {missing[0]})")
        rss = _rss_mib(op.pid)
        return [jobs.seen[f"{r}-prepare"] - t for r, t in created.items()], rss
    finally:
        jobs.stop()
        # Delete the runs while the operator still runs: kopf's timer finalizer needs it to let go.
        custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
        end = time.monotonic() + 300
        while custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"] and time.monotonic() < end:
            time.sleep(1)
        op.terminate()
        op.wait(30)
        core.delete_namespace(ns)


def measure_floor(api: client.ApiClient, n: int) -> list[float]:
    """The same five objects per run (SA, Role, RoleBinding, ConfigMap, Job) from a plain script."""
    core = client.CoreV1Api(api)
    ns = _namespace(core, "bench-floor")
    kube = Kube(api)
    try:
        custom = client.CustomObjectsApi(api)
        out = []
        for i in range(n):
            name = f"r{i:03d}"
            t0 = time.monotonic()
            obj = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _run_body(name))
            run = Run(name, ns, obj["metadata"]["uid"], parse_spec(obj["spec"]))
            for child in [*build_rbac(run), build_config_map(run), build_prepare_job(run)]:
                kube.create_or_adopt(child)
            out.append(time.monotonic() - t0)
        return out
    finally:
        core.delete_namespace(ns)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 and 10 runs only")
    args = ap.parse_args()
    sizes = (1, 10) if args.quick else (1, 50, 200)
    api = _api()
    subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "kiln_api.crd"], check=True,
                   stdout=open(REPO / ".kiln" / "bench-crd.yaml", "w"))
    kubectl = subprocess.run([str(REPO / "devcluster" / "build.sh"), "--print-bin"], capture_output=True,
                             text=True, check=True).stdout.strip() + "/kubectl"
    subprocess.run([kubectl, f"--kubeconfig={KUBECONFIG}", "apply", "--server-side", "--force-conflicts", "-f",
                    str(REPO / ".kiln" / "bench-crd.yaml")], check=True, capture_output=True)
    print(f"{'runs':>5} {'op p50 s':>9} {'op p99 s':>9} {'floor p50 s':>12} {'floor p99 s':>12} "
          f"{'p50 ratio':>10} {'op RSS MiB':>11}")
    for n in sizes:
        op, rss = measure_operator(api, n, deadline=120 + n)
        floor = measure_floor(api, n)
        print(f"{n:>5} {statistics.median(op):>9.3f} {_pct(op, 0.99):>9.3f} {statistics.median(floor):>12.3f} "
              f"{_pct(floor, 0.99):>12.3f} {statistics.median(op) / statistics.median(floor):>10.1f} {rss:>11.0f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
