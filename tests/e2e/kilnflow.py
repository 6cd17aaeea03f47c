"""Helpers for the e2e tests: install kiln, apply examples, read runs, load a serving target."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "kiln.dev", "v1alpha1", "trainingruns"


def kiln(cluster: Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the `kiln` CLI against the test cluster, from the host."""
    env = {"KUBECONFIG": str(cluster.kubeconfig), "AWS_ENDPOINT_URL": cluster.s3["endpoint_url"],
           "AWS_ACCESS_KEY_ID": cluster.s3["access_key"], "AWS_SECRET_ACCESS_KEY": cluster.s3["secret_key"],
           "AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "kiln_operator.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_object(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    api = client.CustomObjectsApi(cluster.api)
    obj: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return obj


def phase_of(cluster: Any, namespace: str, name: str) -> str:
    return str(run_object(cluster, namespace, name).get("status", {}).get("phase") or "Pending")


def condition(run: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in run.get("status", {}).get("conditions", []) if c["type"] == ctype), {})


def live_version(cluster: Any, namespace: str, target: str) -> tuple[int | None, str | None]:
    dep = client.AppsV1Api(cluster.api).read_namespaced_deployment(target, namespace)
    ann = dep.metadata.annotations or {}
    v = ann.get("kiln.dev/live-version")
    return (int(v) if v else None), ann.get("kiln.dev/live-run")


def service_grpc(cluster: Any, namespace: str, target: str) -> str:
    svc = client.CoreV1Api(cluster.api).read_namespaced_service(target, namespace)
    return f"{svc.spec.cluster_ip}:8001"


@dataclass
class Load:
    """Steady load from concurrent clients: greedy requests through the target's Service."""

    url: str
    model: str
    clients: int = 4
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _worker(self) -> None:
        from kiln_api.triton_client import GenerateRequest, generate

        req = GenerateRequest(prompt="Once upon a time", max_new_tokens=8)
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                out = generate(self.url, self.model, req, timeout_s=60)
                if not out.token_ids:
                    raise RuntimeError("empty answer")
                self.ok += 1
                self.latencies.append(time.monotonic() - start)
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                self.failures.append(f"{type(e).__name__}: {str(e)[:200]}")

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=90)
