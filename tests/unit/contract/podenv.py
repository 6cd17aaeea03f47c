"""What a cluster does to a built pod before the trainer sees its environment.

The operator's builders write env entries; Kubernetes resolves fieldRefs and secretKeyRefs, and the
Kubeflow PyTorchJob controller (training-operator v1.9, pkg/controller.v1/pytorch/envvar.go) appends
its rendezvous variables. These helpers do the same to a dict, so a test can hand the trainer exactly
what a pod would hold. Kubernetes keeps the last of duplicated names, as ``dict`` updates do.
"""

from __future__ import annotations

from typing import Any

COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def resolve(container: dict[str, Any], annotations: dict[str, str]) -> dict[str, str]:
    """The container's env as the process sees it (secrets become a placeholder)."""
    env: dict[str, str] = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        source = e["valueFrom"]
        if "secretKeyRef" in source:
            env[e["name"]] = "<secret>"
            continue
        path = source["fieldRef"]["fieldPath"]
        key = path.removeprefix("metadata.annotations['").removesuffix("']")
        assert key != path, f"{e['name']}: only annotation fieldRefs are resolved here, got {path}"
        env[e["name"]] = annotations[key]
    return env


def kubeflow_env(job: dict[str, Any], replica_type: str, index: int) -> dict[str, str]:
    """Variables the training-operator appends to the ``pytorch`` container of one replica."""
    spec = job["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    total = sum(r["replicas"] for r in replicas.values())
    nproc = spec.get("nprocPerNode", "1")
    rank = index + 1 if replica_type == "Worker" else index
    master = replicas["Master"]["template"]["spec"]["containers"][0]
    (port,) = [p["containerPort"] for p in master["ports"] if p["name"] == "pytorchjob-port"]
    return {
        "PYTHONUNBUFFERED": "0",
        "MASTER_PORT": str(port),
        "MASTER_ADDR": f"{job['metadata']['name']}-master-0",
        "WORLD_SIZE": str(total * int(nproc)),
        "RANK": str(rank),
        "PET_NPROC_PER_NODE": nproc,
        "PET_NODE_RANK": str(rank),
        "PET_NNODES": str(total),
    }


def pytorchjob_pods(job: dict[str, Any]) -> list[dict[str, str]]:
    """The resolved env of every pod of a PyTorchJob, node rank order."""
    pods = []
    for rtype, replica in sorted(job["spec"]["pytorchReplicaSpecs"].items()):  # Master before Worker
        (container,) = replica["template"]["spec"]["containers"]
        for i in range(replica["replicas"]):
            pods.append({**resolve(container, {}), **kubeflow_env(job, rtype, i)})
    return pods


def indexed_job_pods(job: dict[str, Any]) -> list[dict[str, str]]:
    """The resolved env of every pod of an Indexed Job, completion index order."""
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return [resolve(container, {COMPLETION_INDEX_ANNOTATION: str(i)}) for i in range(job["spec"]["completions"])]


def torchrun_child_env(pod: dict[str, str], nnodes: int, nproc: int, node_rank: int, local_rank: int,
                       master: tuple[str, int]) -> dict[str, str]:
    """What torchrun gives the process of one local rank (it overrides the pod's RANK and WORLD_SIZE)."""
    return {**pod, "LOCAL_RANK": str(local_rank), "RANK": str(node_rank * nproc + local_rank),
            "GROUP_RANK": str(node_rank), "LOCAL_WORLD_SIZE": str(nproc), "WORLD_SIZE": str(nnodes * nproc),
            "MASTER_ADDR": master[0], "MASTER_PORT": str(master[1]), "TORCHELASTIC_RUN_ID": "none"}
