"""Two-pod gloo all_reduce gangs on the node(s): a PyTorchJob (Master + 1 Worker) and an Indexed Job."""

from __future__ import annotations

import pytest
from kubernetes import client
from nodekit import TRAINER_IMAGE, namespace, pod_log
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
        "containers": [{"name": "pytorch", "image": TRAINER_IMAGE,
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


def test_indexed_job_gang_finds_rank_zero_by_hostname(cluster):
    """The fallback launcher: Indexed Job + headless Service, rank 0 at <job>-0.<job> (subdomain names)."""
    core, batch = client.CoreV1Api(cluster.api), client.BatchV1Api(cluster.api)
    index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    with namespace(core, "gang") as ns:
        core.create_namespaced_service(ns, {"metadata": {"name": "gang"}, "spec": {
            "clusterIP": "None", "publishNotReadyAddresses": True, "selector": {"job-name": "gang"},
            "ports": [{"port": 23456}]}})
        batch.create_namespaced_job(ns, {"metadata": {"name": "gang"}, "spec": {
            "completionMode": "Indexed", "completions": 2, "parallelism": 2, "backoffLimit": 0,
            "template": {"spec": {"subdomain": "gang", "restartPolicy": "Never", "containers": [{
                "name": "pytorch", "image": TRAINER_IMAGE, "command": ["python", "-c", SCRIPT],
                "env": [{"name": "MASTER_ADDR", "value": "gang-0.gang"}, {"name": "MASTER_PORT", "value": "23456"},
                        {"name": "WORLD_SIZE", "value": "2"},
                        {"name": "RANK", "valueFrom": {"fieldRef": {"fieldPath": index}}}]}]}}}})

        def finished():
            st = batch.read_namespaced_job_status("gang", ns).status
            return st if (st.succeeded or 0) == 2 or (st.failed or 0) > 0 else None

        st = wait_for(finished, 180, "Indexed Job gang to finish")
        logs = {p.metadata.annotations["batch.kubernetes.io/job-completion-index"]:
                pod_log(core, ns, p.metadata.name) for p in core.list_namespaced_pod(ns).items}
        assert st.succeeded == 2, logs
        assert "env gang-0.gang 23456 0 2" in logs["0"] and "allreduce 3.0" in logs["0"]
        assert "env gang-0.gang 23456 1 2" in logs["1"] and "allreduce 3.0" in logs["1"]
