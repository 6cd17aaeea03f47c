"""Operator scale: 1 / 100 / 1,000 TrainingRuns in flight against one operator process.

Per size N: N runs are applied in a burst (4 client threads) and left to come to rest; then it prints,
each figure with its goal and which way the ratio goes:
- apply → first Job (``<run>-prepare``) p50/p99 of 40 further runs applied one at a time while the N are in
  flight, against the raw API floor measured in the same run the same way (the same objects created by
  a plain script); ratio = operator / floor, lower is better, goal ≤ 3× (and p99 ≤ 2 s) at 1,000 runs;
- status update after a child changes: 100 prepare Jobs are marked failed (their status, as the Job
  controller writes it) and the time until each run's ``status.phase`` says Failed is taken;
- requests at rest, over a 60 s window with nothing applied: what the operator's reconciles sent (its own
  ``kiln_api_requests_total``) and the operator-kind requests the API server counted
  (``apiserver_request_total``: non-watch verbs on trainingruns, jobs, configmaps, pods, service accounts,
  roles; the Job controller's pod creations and Job status writes left out), next to the number of
  changes (watch events of the namespace's runs and Jobs) in that window: goal proportional to changes;
- the operator's RSS (goal ≤ 250 MB);
- the burst itself: apply → first Job p50/p99 of the N and when the last Job appeared (throughput, no goal).

Runs in flight never run a pod: a ResourceQuota of zero pods in the bench namespace keeps every prepare
Job without pods, so each run rests in Preparing with its RBAC, ConfigMaps and Job — the whole per-run
API footprint, with none of the node's work (2 cores cannot run 1,000 pods). ``spec.suspend`` is not
used because it only acts in Training: a suspended new run would still prepare.

Needs the embedded cluster (`make cluster-up`).

    .venv/bin/python bench/bench_operator_scale.py              # 1, 100, 1000 runs
    .venv/bin/python bench/bench_operator_scale.py --sizes 1 10 # quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from bench_reconcile import (
    GROUP,
    KUBECONFIG,
    PLURAL,
    REPO,
    VERSION,
    _api,
    _namespace,
    _pct,
    _rss_mib,
    _run_body,
    measure_floor,
)
from kubernetes import client, watch
from urllib3.exceptions import InsecureRequestWarning

# A throwaway control plane may serve a self-signed certificate; the warning would drown the figures.
warnings.simplefilter("ignore", InsecureRequestWarning)

REST_S = 60.0
CHANGES = 100
PROBES = 40
OPERATOR_KINDS = {"trainingruns", "jobs", "configmaps", "pods", "serviceaccounts", "roles", "rolebindings",
                  "pytorchjobs"}


def wait(cond: Callable[[], bool], seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > end:
            raise SystemExit(f"timed out after {seconds:.0f}s: {what}")
        time.sleep(0.2)


class Seen:
    """First sighting (monotonic) of each Job, and of each run's phases, from watches; counts events."""

    def __init__(self, api: client.ApiClient, ns: str) -> None:
        self.jobs: dict[str, float] = {}
        self.phases: dict[tuple[str, str], float] = {}
        self.events = 0
        self._watches = [watch.Watch(), watch.Watch()]
        batch, custom = client.BatchV1Api(api), client.CustomObjectsApi(api)
        for w, fn, args, on in ((self._watches[0], batch.list_namespaced_job, (ns,), self._job),
                                (self._watches[1], custom.list_namespaced_custom_object,
                                 (GROUP, VERSION, ns, PLURAL), self._run)):
            threading.Thread(target=self._loop, args=(w, fn, args, on), daemon=True).start()

    def _loop(self, w: watch.Watch, fn: Any, args: tuple[Any, ...], on: Callable[[Any], None]) -> None:
        try:
            for ev in w.stream(fn, *args, timeout_seconds=0):
                self.events += 1
                on(ev["object"])
        except Exception:  # noqa: BLE001 - cut when the namespace goes; results are taken by then
            return

    def _job(self, obj: Any) -> None:
        self.jobs.setdefault(obj.metadata.name, time.monotonic())

    def _run(self, obj: dict[str, Any]) -> None:
        phase = (obj.get("status") or {}).get("phase")
        if phase:
            self.phases.setdefault((obj["metadata"]["name"], phase), time.monotonic())

    def stop(self) -> None:
        for w in self._watches:
            w.stop()


def _scrape(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
    return out


def _operator_requests(port: int) -> float:
    return sum(v for k, v in _scrape(f"http://127.0.0.1:{port}/metrics").items()
               if k.startswith("kiln_api_requests_total{"))


def _labels(series: str) -> dict[str, str]:
    inner = series[series.index("{") + 1:series.rindex("}")]
    return {k: v.strip('"') for k, v in (p.split("=", 1) for p in inner.split('",') if "=" in p)}


def _apiserver_requests(api: client.ApiClient) -> float:
    """Requests of the kinds and verbs the operator uses, as the API server counts them."""
    resp = api.call_api("/metrics", "GET", _preload_content=False, auth_settings=["BearerToken"],
                        _return_http_data_only=True)
    total = 0.0
    for line in resp.data.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        series, _, value = line.rpartition(" ")
        lab = _labels(series)
        if lab.get("resource") not in OPERATOR_KINDS or lab.get("verb") in ("WATCH", "CONNECT"):
            continue
        if (lab["resource"], lab.get("verb")) == ("pods", "POST") or \
                (lab["resource"], lab.get("subresource")) == ("jobs", "status"):
            continue  # the Job controller retrying pods against the quota, and writing Job status
        total += float(value)
    return total


def _fail_job(batch: client.BatchV1Api, ns: str, name: str) -> None:
    """Write the status the Job controller writes for a Job over its backoff limit."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    cond = {"status": "True", "reason": "BackoffLimitExceeded", "message": "bench", "lastTransitionTime": now,
            "lastProbeTime": now}
    batch.patch_namespaced_job_status(name, ns, {"status": {
        "startTime": now, "conditions": [{**cond, "type": "FailureTarget"}, {**cond, "type": "Failed"}]}})


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(api: client.ApiClient, n: int) -> dict[str, Any]:
    core, batch, custom = client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)
    ns = _namespace(core, "bench-scale")
    port = _free_port()
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG), "KILN_NAMESPACE": ns,
           "KILN_METRICS_PORT": str(port), "KILN_LOG_LEVEL": "WARNING", "DS_ACCELERATOR": "cpu"}
    # Not `-m kiln_operator.main`: kopf imports that module again, which would register its startup twice.
    op = subprocess.Popen([sys.executable, "-c", "from kiln_operator.main import main; main()"], env=env, stdout=subprocess.DEVNULL,
                          stderr=open(REPO / ".kiln" / f"bench-scale-{n}.log", "w"))
    seen = Seen(api, ns)
    out: dict[str, Any] = {"n": n}
    try:
        # Ready when it reconciles: a warm-up run gets its Job (startup is not what is measured).
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _run_body("warmup"))
        wait(lambda: "warmup-prepare" in seen.jobs, 120, "the operator reconciles a warm-up run")
        created: dict[str, float] = {}
        lock = threading.Lock()

        def create(i: int) -> None:
            name = f"r{i:04d}"
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _run_body(name))
            with lock:
                created[name] = time.monotonic()

        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:  # kubectl apply of many files goes about this fast
            list(pool.map(create, range(n)))
        out["apply_s"] = time.monotonic() - t0
        wait(lambda: all(f"{r}-prepare" in seen.jobs for r in created), 120 + n, f"{n} prepare Jobs")
        fill = [seen.jobs[f"{r}-prepare"] - t for r, t in created.items()]
        out["fill_p50"], out["fill_p99"] = statistics.median(fill), _pct(fill, 0.99)
        out["fill_s"] = max(seen.jobs[f"{r}-prepare"] for r in created) - t0
        wait(lambda: all((r, "Preparing") in seen.phases for r in created), 120 + n, "every run Preparing")
        # At rest: nothing changes from here on but what the cluster does by itself.
        wait_quiet(lambda: _operator_requests(port), 3.0, 120)
        ev0, op0, as0 = seen.events, _operator_requests(port), _apiserver_requests(api)
        time.sleep(REST_S)  # the measurement window itself
        out["rest_events"] = seen.events - ev0
        out["rest_op_rps"] = (_operator_requests(port) - op0) / REST_S
        out["rest_api_rps"] = (_apiserver_requests(api) - as0) / REST_S
        out["probe"] = _probes(custom, seen, ns)
        out["rss"] = _rss_mib(op.pid)
        out["change"] = _child_changes(batch, seen, ns, sorted(created)[:CHANGES])
        return out
    finally:
        seen.stop()
        custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)  # kopf's finalizer: op still up
        wait(lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"], 600,
             "runs deleted")
        op.terminate()
        op.wait(30)
        core.delete_namespace(ns)


def wait_quiet(count: Callable[[], float], quiet_s: float, seconds: float) -> None:
    """Until ``count`` stays the same for ``quiet_s`` (the operator has finished its burst)."""
    end, last, since = time.monotonic() + seconds, count(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > end:
            raise SystemExit("the operator never came to rest")
        time.sleep(0.5)
        now = count()
        if now != last:
            last, since = now, time.monotonic()


def _probes(custom: client.CustomObjectsApi, seen: Seen, ns: str) -> list[float]:
    """Apply → first Job of new runs, one at a time, while the others are in flight (the floor's way)."""
    out = []
    for i in range(PROBES):
        name = f"probe{i:02d}"
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _run_body(name))
        t = time.monotonic()
        wait(lambda n=name: f"{n}-prepare" in seen.jobs, 60, f"{name} gets its Job")
        out.append(seen.jobs[f"{name}-prepare"] - t)
    return out


def _child_changes(batch: client.BatchV1Api, seen: Seen, ns: str, runs: list[str]) -> list[float]:
    """Seconds from a prepare Job's failure to its run's status saying Failed."""
    changed: dict[str, float] = {}
    for r in runs:
        _fail_job(batch, ns, f"{r}-prepare")
        changed[r] = time.monotonic()
    wait(lambda: all((r, "Failed") in seen.phases for r in runs), 300, "runs Failed after their Job failed")
    return [seen.phases[(r, "Failed")] - t for r, t in changed.items()]


def report(m: dict[str, Any], floor: list[float]) -> None:
    fp50, fp99 = statistics.median(floor), _pct(floor, 0.99)
    pr, ch, n = m["probe"], m["change"], m["n"]
    p99 = _pct(pr, 0.99)
    rows = [
        ("apply → first Job p50 / p99", f"{statistics.median(pr):.3f} / {p99:.3f} s ({len(pr)} applies)",
         "p99 ≤ 2 s at 1,000 runs (lower is better)"),
        ("raw API floor p50 / p99", f"{fp50:.3f} / {fp99:.3f} s ({len(floor)} runs)", "baseline, same run"),
        ("p99 operator / p99 floor", f"{p99 / fp99:.2f}×", "≤ 3× at 1,000 runs (lower is better)"),
        ("child change → run status p50 / p99", f"{statistics.median(ch):.3f} / {_pct(ch, 0.99):.3f} s "
         f"({len(ch)} Jobs failed)", "p99 ≤ 2 s (lower is better)"),
        ("requests at rest: operator's reconciles", f"{m['rest_op_rps']:.3f} /s", "∝ changes (lower is better)"),
        ("requests at rest: API server, operator kinds", f"{m['rest_api_rps']:.3f} /s", "∝ changes"),
        ("changes at rest (watch events of runs, Jobs)", f"{m['rest_events'] / REST_S:.3f} /s", f"over {REST_S:.0f} s"),
        ("operator RSS", f"{m['rss']:.0f} MiB", "≤ 250 MB (lower is better)"),
        ("fill: burst apply → first Job p50 / p99", f"{m['fill_p50']:.2f} / {m['fill_p99']:.2f} s",
         f"{n} runs applied in {m['apply_s']:.1f} s by 4 client threads, all Jobs after {m['fill_s']:.1f} s"),
    ]
    print(f"\n== {n} runs in flight ==")
    for what, value, goal in rows:
        print(f"  {what:<46} {value:<32} goal: {goal}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 1000])
    args = ap.parse_args()
    api = _api()
    for n in args.sizes:
        m = measure(api, n)
        floor = measure_floor(api, PROBES)
        report(m, floor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
