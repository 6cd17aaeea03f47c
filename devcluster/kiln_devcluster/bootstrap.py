"""Objects `up` applies once the API server is ready, before the add-ons start.

- namespaces ``kiln-system`` and ``kubeflow`` (the training-operator keeps its
  webhook certificate Secret there);
- Service ``minio`` in ``kiln-system`` without a selector plus manual Endpoints
  to the S3 server on the bridge address, so pods use
  ``http://minio.kiln-system.svc:9000`` (the EndpointSlice mirroring controller
  turns the Endpoints into an EndpointSlice);
- the training-operator's PyTorchJob CRD from its module source, and its
  webhook wiring (see trainingop.py);
- Kueue's CRDs and webhook wiring, also from its module source (see kueue.py).

Applied with server-side apply: idempotent, and the CRD is too large for the
client-side last-applied annotation.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiln_devcluster import kueue, trainingop
from kiln_devcluster.apiclient import get_json
from kiln_devcluster.components import NODE_IP, S3_PORT, Ctx

S3_SERVICE = "minio"
S3_NAMESPACE = "kiln-system"


def _manifests() -> list[dict[str, Any]]:
    port = {"name": "s3", "port": S3_PORT, "protocol": "TCP"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": S3_NAMESPACE}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow"}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": S3_SERVICE, "namespace": S3_NAMESPACE, "labels": {"app.kubernetes.io/part-of": "kiln-devcluster"}},
            "spec": {"ports": [{**port, "targetPort": S3_PORT}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": S3_SERVICE, "namespace": S3_NAMESPACE, "labels": {"app.kubernetes.io/part-of": "kiln-devcluster"}},
            "subsets": [{"addresses": [{"ip": NODE_IP}], "ports": [port]}],
        },
    ]


def kubectl(ctx: Ctx, *args: str, stdin: str | None = None) -> str:
    """Run the built kubectl against this cluster as admin; raises with its stderr on failure."""
    argv = [str(ctx.bin / "kubectl"), f"--kubeconfig={ctx.paths.kubeconfig}", *args]
    out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def apply_base(ctx: Ctx, crds: Path | None) -> None:
    """Apply the namespaces, the S3 Service/Endpoints and (when built) the training-operator's CRD and webhook."""
    docs = "\n---\n".join(json.dumps(m) for m in _manifests())
    kubectl(ctx, "apply", "--server-side", "--force-conflicts", "--field-manager=kiln-devcluster", "-f", "-", stdin=docs)
    if crds is not None:
        docs = "\n---\n".join(json.dumps(m) for m in trainingop.manifests())
        kubectl(ctx, "apply", "--server-side", "--force-conflicts", "--field-manager=kiln-devcluster", "-f", "-", stdin=docs)
        kubectl(ctx, "apply", "--server-side", "--force-conflicts", "--field-manager=kiln-devcluster", "-f", str(crds))
        wait_crd_established(ctx, "pytorchjobs.kubeflow.org", 60.0)


def apply_kueue(ctx: Ctx, crds: Path) -> None:
    """Kueue's namespace, webhook Service/Endpoints/configurations and CRDs (kueue.py)."""
    docs = kueue.manifests_json(ctx, crds)
    kubectl(ctx, "apply", "--server-side", "--force-conflicts", "--field-manager=kiln-devcluster", "-f", "-", stdin=docs)
    for plural in ("workloads", "clusterqueues", "localqueues", "resourceflavors", "workloadpriorityclasses"):
        wait_crd_established(ctx, f"{plural}.kueue.x-k8s.io", 60.0)


def wait_crd_established(ctx: Ctx, name: str, timeout_s: float) -> None:
    """Poll the CRD until Established. (`kubectl wait` errors out instead of waiting while a CRD that
    was just created has no status.conditions yet, which is what a fresh cluster shows.)"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        crd = get_json(ctx, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") or {}
        conds = crd.get("status", {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
            return
        time.sleep(0.2)
    raise TimeoutError(f"CRD {name} not Established after {timeout_s:.0f}s")


def node_ready(ctx: Ctx, name: str) -> bool:
    node = get_json(ctx, f"/api/v1/nodes/{name}")
    if node is None:
        return False
    conds = node.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def wait_node_ready(ctx: Ctx, name: str, timeout_s: float, alive: Callable[[], bool]) -> None:
    """Wait for Node ``name`` to be Ready; fail early if the node process died (``alive()`` False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if node_ready(ctx, name):
            return
        if not alive():
            raise RuntimeError(f"the process node exited before Node {name} became Ready")
        time.sleep(0.5)
    raise TimeoutError(f"Node {name} not Ready after {timeout_s:.0f}s")


def stale_nodes(nodes: list[dict[str, Any]], wanted: set[str], real: bool) -> list[str]:
    """Node objects left by another mode or node count: a name this `up` will not run, or a node of
    the other runtime (a process node's record would otherwise pass as a Ready kubelet for a while
    and get pods scheduled to it; a fresh registration is clean)."""
    stale = []
    for node in nodes:
        name = node["metadata"]["name"]
        runtime = node.get("status", {}).get("nodeInfo", {}).get("containerRuntimeVersion", "")
        if name not in wanted or runtime.startswith("containerd://") != real:
            stale.append(name)
    return stale


def prune_nodes(ctx: Ctx, wanted: set[str], real: bool) -> list[str]:
    """Delete stale Node objects (see ``stale_nodes``); their pods are garbage-collected with them."""
    nodes = (get_json(ctx, "/api/v1/nodes") or {}).get("items", [])
    names = stale_nodes(nodes, wanted, real)
    if names:
        kubectl(ctx, "delete", "node", *names, "--wait=false")
    return names
