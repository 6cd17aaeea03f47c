"""The training gang as a Kubeflow PyTorchJob (Master + Workers).

The Kubeflow controller injects MASTER_ADDR, MASTER_PORT, WORLD_SIZE (pods × nprocPerNode), RANK (the
pod's index) and PET_NODE_RANK / PET_NNODES / PET_NPROC_PER_NODE into the container named ``pytorch``;
those names are the pod contract's (``kiln_api.contract``). Restarts are the operator's: backoffLimit 0
and restartPolicy Never make any pod failure fail the job, and the operator restarts the whole gang from
the newest committed checkpoint (DeepSpeed cannot re-admit one restarted rank) — unless a pod exited
with the contract's bad-config code, which no restart can fix.
"""

from __future__ import annotations

from typing import Any

from kiln_api import contract as c

from kiln_operator.builders.common import Run, child_name, metadata, pod_spec
from kiln_operator.builders.training_env import GRACE_SECONDS, STAGE, nproc_per_node, training_container
from kiln_operator.queueing import queued


def _replica(run: Run, replicas: int, labels: dict[str, str]) -> dict[str, Any]:
    container = training_container(run, c.PYTORCHJOB_CONTAINER)
    return {
        "replicas": replicas,
        "restartPolicy": "Never",
        "template": {
            "metadata": {"labels": dict(labels)},
            "spec": pod_spec(run, container, shm=True, grace_seconds=GRACE_SECONDS, api_token=True),
        },
    }


def build_pytorchjob(run: Run) -> dict[str, Any]:
    """``<run>-train`` with one Master and ``nodes - 1`` Workers (suspended for Kueue with spec.queue)."""
    name = child_name(run, STAGE)
    meta = metadata(run, name, STAGE)
    replicas = {"Master": _replica(run, 1, meta["labels"])}
    if run.spec.training.nodes > 1:
        replicas["Worker"] = _replica(run, run.spec.training.nodes - 1, meta["labels"])
    return queued(run.spec, {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": meta,
        "spec": {
            "nprocPerNode": str(nproc_per_node(run)),
            "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "All"},
            "pytorchReplicaSpecs": replicas,
        },
    })
