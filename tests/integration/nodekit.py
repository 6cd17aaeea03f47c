"""Helpers for the node integration tests: namespaces, pod manifests, waits on pod state; real-node helpers."""

from __future__ import annotations

import json
import subprocess
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from clusterlib import Cluster
from kiln_devcluster.nodes import node_mode
from kubernetes import client
from waiting import wait_for


def _project_version() -> str:
    with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


TRAINER_IMAGE = f"ghcr.io/kiln-dev/kiln-trainer:{_project_version()}"
"""Python + the project on real nodes (``make cluster-images`` imports it into every node)."""
SERVING_IMAGE = f"ghcr.io/kiln-dev/kiln-serving:{_project_version()}"
"""tritonserver + the project's serving code (the process node maps it to the venv's tritonserver)."""
PY_IMAGE = TRAINER_IMAGE if node_mode() == "real" else "python:3.11-slim"
"""The process node maps python:3.11-slim to the project venv (devcluster/images.yaml)."""
BUSYBOX = "kiln.local/busybox:1.35"
"""On real nodes: imported into every node's containerd by `up` (devcluster/kiln_devcluster/nodeimages.py)."""
SH_IMAGE = BUSYBOX if node_mode() == "real" else "busybox:1.36"
"""A shell image: busybox on real nodes; the process node maps any busybox to the host's shell."""
PAGE_PORT = 8080


@contextmanager
def namespace(core: client.CoreV1Api, prefix: str) -> Iterator[str]:
    """A fresh namespace, deleted (and waited for) afterwards so pods do not leak between tests."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    # The default ServiceAccount is created by the controller-manager; pods need it for admission.
    wait_for(lambda: core.read_namespaced_service_account("default", name), 60, f"default SA in {name}")
    try:
        yield name
    finally:
        delete_namespace(core, name)


def delete_namespace(core: client.CoreV1Api, name: str, timeout: float = 180) -> None:
    """Delete a test's namespace and wait until it is gone: a namespace left Terminating (or with
    running pods) would hold the nodes' CPU and memory for the tests after it."""
    try:
        core.delete_namespace(name)
    except client.ApiException as e:
        if e.status != 404:
            raise

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except client.ApiException as e:
            if e.status == 404:
                return True
            raise
        return False

    wait_for(gone, timeout, f"namespace {name} deleted")


def pod(name: str, command: list[str], image: str = PY_IMAGE, restart: str = "Never", **container: Any) -> dict[str, Any]:
    """A one-container pod manifest; extra keyword arguments go into the container."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"test": name}},
        "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 5,
                 "containers": [{"name": "main", "image": image, "command": command, **container}]},
    }


def read_pod(core: client.CoreV1Api, ns: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = core.api_client.sanitize_for_serialization(core.read_namespaced_pod(name, ns))
    return out


def wait_phase(core: client.CoreV1Api, ns: str, name: str, phases: tuple[str, ...], timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        p = read_pod(core, ns, name)
        return p if p.get("status", {}).get("phase") in phases else None

    return wait_for(check, timeout, f"pod {ns}/{name} in phase {phases}")


def waiting_reason(p: dict[str, Any], container: str = "main") -> str:
    for st in p.get("status", {}).get("containerStatuses") or []:
        if st["name"] == container:
            return str((st.get("state", {}).get("waiting") or {}).get("reason", ""))
    return ""


def wait_waiting_reason(core: client.CoreV1Api, ns: str, name: str, reasons: tuple[str, ...],
                        timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        p = read_pod(core, ns, name)
        return p if waiting_reason(p) in reasons else None

    return wait_for(check, timeout, f"pod {ns}/{name} waiting with reason in {reasons}")


def event_reasons(core: client.CoreV1Api, ns: str, name: str) -> list[tuple[str, str]]:
    evs = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    return [(e.reason or "", e.message or "") for e in evs]


def exit_code(p: dict[str, Any], container: str = "main") -> int | None:
    for st in p.get("status", {}).get("containerStatuses") or []:
        if st["name"] == container and "terminated" in (st.get("state") or {}):
            return int(st["state"]["terminated"]["exitCode"])
    return None


def pod_log(core: client.CoreV1Api, ns: str, name: str, **kwargs: Any) -> str:
    """``read_namespaced_pod_log`` as text.

    kubernetes 36.x returns ``str(bytes)`` ("b'...'") for this text/plain endpoint when it preloads
    the body, so read the raw response and decode it here.
    """
    resp = core.read_namespaced_pod_log(name, ns, _preload_content=False, **kwargs)
    return str(resp.data.decode("utf-8"))

def real_node_names(cluster: Cluster) -> list[str]:
    """Names of the nodes run by a kubelet on containerd; skips the test when there is none."""
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    names = [n["metadata"]["name"] for n in nodes
             if n["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")]
    if not names:
        pytest.skip("the cluster runs the process node (KILN_NODE=process), not kubelet + containerd")
    return names


def busybox_pod(name: str, script: str, **container: Any) -> dict[str, Any]:
    """A pod running ``sh -c script`` in busybox; extra keyword arguments go into the container."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"test": name}},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
                 "containers": [{"name": "main", "image": BUSYBOX, "imagePullPolicy": "Never",
                                 "command": ["sh", "-c", script], **container}]},
    }


def page_server(name: str, text: str) -> dict[str, Any]:
    """A pod whose busybox httpd serves ``text`` at / on PAGE_PORT (ready once it answers)."""
    script = f"mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p {PAGE_PORT} -h /www"
    manifest = busybox_pod(name, script, ports=[{"containerPort": PAGE_PORT}],
                           readinessProbe={"httpGet": {"path": "/", "port": PAGE_PORT}, "periodSeconds": 1})
    manifest["spec"]["restartPolicy"] = "Always"
    return manifest


def service(name: str, selector: dict[str, str], port: int = 80) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector, "ports": [{"port": port, "targetPort": PAGE_PORT}]}}


def wait_ready(core: client.CoreV1Api, ns: str, name: str, timeout: float = 120) -> None:
    def ready() -> bool:
        statuses = core.read_namespaced_pod_status(name, ns).status.container_statuses or []
        return bool(statuses) and all(s.ready for s in statuses)

    wait_for(ready, timeout, f"pod {ns}/{name} ready")


def container_runs(p: dict[str, Any], state_dir: Path) -> Callable[[], bool]:
    """A check whether the pod's (first) container still runs: on the process node its id is the
    pid; on a real node the task is looked up in that node's containerd."""
    cid = p["status"]["containerStatuses"][0]["containerID"]
    kind, ident = cid.split("://", 1)
    if kind != "containerd":
        return lambda: Path(f"/proc/{ident}").exists()
    sock = state_dir / "nodes" / p["spec"]["nodeName"] / "containerd.sock"

    def runs() -> bool:
        out = subprocess.run(["ctr", f"--address={sock}", "-n", "k8s.io", "tasks", "ls"],
                             capture_output=True, text=True, check=True).stdout
        return any(line.split()[:1] == [ident] and "RUNNING" in line for line in out.splitlines())

    return runs
