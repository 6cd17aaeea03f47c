"""The training gang as an Indexed Job + headless Service, for clusters without Kubeflow.

Pod ``i`` gets hostname ``<run>-train-i`` under the Service's subdomain, so node rank 0 is reachable at
``<run>-train-0.<run>-train``; the completion index is the node rank. The environment carries the same
contract variables a PyTorchJob's controller injects, so the trainer cannot tell the launchers apart.
"""

from __future__ import annotations

from typing import Any

from kiln_api import contract as c

from kiln_operator.builders.common import (
    LABEL_RUN,
    LABEL_STAGE,
    Run,
    child_name,
    metadata,
    never_retry_bad_config,
    pod_spec,
)
from kiln_operator.builders.training_env import GRACE_SECONDS, STAGE, training_container
from kiln_operator.queueing import queued


def index_env(run: Run) -> list[dict[str, Any]]:
    """What Kubeflow would inject: rendezvous on node rank 0, world in processes, rank = pod index."""
    name = child_name(run, STAGE)
    index = {"valueFrom": {"fieldRef": {"fieldPath": c.COMPLETION_INDEX_FIELD}}}
    return [
        {"name": c.ENV_MASTER_ADDR, "value": f"{name}-0.{name}"},
        {"name": c.ENV_MASTER_PORT, "value": str(c.RENDEZVOUS_PORT)},
        {"name": c.ENV_WORLD_SIZE, "value": str(run.spec.training.devices())},
        {"name": c.ENV_RANK, **index},
        {"name": c.ENV_NODE_RANK, **index},
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
            "ports": [{"name": "rendezvous", "port": c.RENDEZVOUS_PORT, "targetPort": c.RENDEZVOUS_PORT}],
        },
    }


def build_indexed_job(run: Run) -> dict[str, Any]:
    """``<run>-train``: ``nodes`` completions, all running at once, no per-pod retries (suspended for
    Kueue with spec.queue)."""
    name = child_name(run, STAGE)
    meta = metadata(run, name, STAGE)
    nodes = run.spec.training.nodes
    container = training_container(run, c.TRAINER_CONTAINER, extra_env=index_env(run))
    pod = pod_spec(run, container, shm=True, grace_seconds=GRACE_SECONDS, api_token=True)
    pod["subdomain"] = name
    return queued(run.spec, {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "completionMode": "Indexed",
            "completions": nodes,
            "parallelism": nodes,
            "backoffLimit": 0,
            # The gang restarts whole, from the operator; this only names a config error as the cause.
            "podFailurePolicy": never_retry_bad_config(c.TRAINER_CONTAINER),
            "template": {"metadata": {"labels": dict(meta["labels"])}, "spec": pod},
        },
    })
