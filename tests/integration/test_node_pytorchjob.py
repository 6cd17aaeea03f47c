"""A PyTorchJob (Master + 1 Worker) runs a gloo all_reduce across two pods of the process node."""

from __future__ import annotations

import pytest
from kubernetes import client
from nodekit import namespace, pod_log
from waiting import wait_for

pytestmark = pytest.mark.timeout(420)

SCRIPT = """
import os, torch, torch.distributed as dist
print("env", os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], os.environ["RANK"], os.environ["WORLD_SIZE"], flush=True)
dist.init_process_group("gloo", timeout=__import__("datetime").timedelta(seconds=120))
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
print("allreduce", t.item(), flush=True)
assert t.item() == 3.0
dist.destroy_process_group()
"""


def replica(replicas: int) -> dict:
    return {"replicas": replicas, "restartPolicy": "OnFailure", "template": {"spec": {
        "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "pytorch", "image": "ghcr.io/kiln/kiln-trainer:dev",
                        "command": ["python", "-c", SCRIPT]}]}}}


def test_pytorchjob_all_reduce(cluster):
    api = cluster.api
    try:
        client.ApiextensionsV1Api(api).read_custom_resource_definition("pytorchjobs.kubeflow.org")
    except client.ApiException as exc:
        if exc.status == 404:
            pytest.skip("the PyTorchJob CRD is not installed (training-operator not built)")
        raise
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    with namespace(core, "ptj") as ns:
        job = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "ar"},
               "spec": {"pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(1)}}}
        custom.create_namespaced_custom_object("kubeflow.org", "v1", ns, "pytorchjobs", job)

        def finished():
            obj = custom.get_namespaced_custom_object("kubeflow.org", "v1", ns, "pytorchjobs", "ar")
            conds = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
            return conds if conds.get("Succeeded") == "True" or conds.get("Failed") == "True" else None

        conds = wait_for(finished, 300, "PyTorchJob ar to finish")
        logs = {p.metadata.name: pod_log(core, ns, p.metadata.name, container="pytorch")
                for p in core.list_namespaced_pod(ns).items}
        assert conds.get("Succeeded") == "True", (conds, logs)
        master, worker = logs["ar-master-0"], logs["ar-worker-0"]
        assert "env ar-master-0 23456 0 2" in master and "allreduce 3.0" in master
        assert "env ar-master-0 23456 1 2" in worker and "allreduce 3.0" in worker
