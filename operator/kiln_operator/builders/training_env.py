"""The rendezvous environment both training launchers give every pod (torchrun's PET_* variables)."""

from __future__ import annotations

from typing import Any

from kiln_operator.builders.common import MASTER_PORT, Run

METRICS_PORT = 9464
"""Rank 0 serves kiln_train_* gauges here (TrainConfig.monitor.prometheus_port); the chart's PodMonitor scrapes it."""
GRACE_SECONDS = 120
"""SIGTERM → SIGKILL window: the trainer saves a checkpoint on SIGTERM (suspend, preemption)."""


def nproc_per_node(run: Run) -> int:
    """Processes per pod: one per GPU, or one on CPU."""
    return max(run.spec.training.gpus_per_node, 1)


def rendezvous_env(run: Run) -> list[dict[str, Any]]:
    """Variables a PyTorchJob would inject; the Indexed Job builder adds the rank-specific ones."""
    return [
        {"name": "PET_NNODES", "value": str(run.spec.training.nodes)},
        {"name": "PET_NPROC_PER_NODE", "value": str(nproc_per_node(run))},
        {"name": "KILN_CHECKPOINT_ON_SIGTERM", "value": "1"},
    ]


def ports() -> list[dict[str, Any]]:
    return [{"name": "pytorchjob-port", "containerPort": MASTER_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]
