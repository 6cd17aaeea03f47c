"""The training gang as an Indexed Job + headless Service, for clusters without Kubeflow.

Pod ``i`` gets hostname ``<run>-train-i`` under the Service's subdomain, so rank 0 is reachable at
``<run>-train-0.<run>-train``; the completion index is the node rank. The environment matches what a
PyTorchJob injects, so the trainer cannot tell the launchers apart.
"""

from __future__ import annotations

from typing import Any

from kiln_operator.builders.common import (
    LABEL_RUN,
    LABEL_STAGE,
    MASTER_PORT,
    Run,
    child_name,
    metadata,
    pod_spec,
    trainer_container,
)
from kiln_operator.builders.training_env import GRACE_SECONDS, ports, rendezvous_env

STAGE = "train"
_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def index_env(run: Run) -> list[dict[str, Any]]:
    name = child_name(run, STAGE)
    master = f"{name}-0.{name}"
    return [
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
        {"name": "WORLD_SIZE", "value": str(run.spec.training.nodes)},
        {"name": "RANK", "valueFrom": {"fieldRef": {"fieldPath": _INDEX}}},
        {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": _INDEX}}},
        {"name": "PET_MASTER_ADDR", "value": master},
        {"name": "PET_MASTER_PORT", "value": str(MASTER_PORT)},
    ]


def build_headless_service(run: Run) -> dict[str, Any]:
    """Stable DNS for the gang; not-ready addresses are published so rendezvous starts before readiness."""
    name = child_name(run, STAGE)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(run, name, STAGE),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {LABEL_RUN: run.name, LABEL_STAGE: STAGE},
            "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
        },
    }


def build_indexed_job(run: Run) -> dict[str, Any]:
    """``<run>-train``: ``nodes`` completions, all running at once, no per-pod retries."""
    name = child_name(run, STAGE)
    meta = metadata(run, name, STAGE)
    nodes = run.spec.training.nodes
    container = trainer_container(run, STAGE, extra_env=rendezvous_env(run) + index_env(run),
                                  gpus=True, shm=True, ports=ports())
    pod = pod_spec(run, container, shm=True, grace_seconds=GRACE_SECONDS)
    pod["subdomain"] = name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "completionMode": "Indexed",
            "completions": nodes,
            "parallelism": nodes,
            "backoffLimit": 0,
            "template": {"metadata": {"labels": dict(meta["labels"])}, "spec": pod},
        },
    }
