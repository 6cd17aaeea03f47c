"""The TrainingRun's status types (``kiln.dev/v1alpha1``): what the operator and the trainer report.

``crd.py`` generates the status schema from these dataclasses; the trainer patches ``status.progress``
through :func:`progress_patch`. Split from ``trainingrun.py`` (the spec), which re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kiln_api.specfields import SpecError, from_dict, knob

PHASES = ("Pending", "Preparing", "Training", "Exporting", "RollingOut", "Succeeded", "Failed", "Suspended")
TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass
class Condition:
    """A Kubernetes-style condition (kstatus and Argo CD read Ready and Stalled)."""

    type: str = knob(max_length=64)
    """Ready, Prepared, Trained, Exported, RolledOut, Stalled."""
    status: str = knob(enum=("True", "False", "Unknown"))
    """Condition status."""
    reason: str = knob(max_length=128)
    """CamelCase reason, e.g. PreflightFailed, JobFailed, Preempted."""
    last_transition_time: str = knob(max_length=64)
    """RFC 3339 time the status last changed."""
    message: str = knob("", max_length=4096)
    """Human-readable detail."""
    observed_generation: int | None = None
    """metadata.generation this condition was computed for."""


@dataclass
class Progress:
    """Written by the trainer through its per-run ServiceAccount (patch on trainingruns/status)."""

    step: int | None = None
    """Optimizer steps done."""
    tokens: int | None = None
    """Training tokens consumed."""
    loss: float | None = None
    """Latest training loss."""
    tokens_per_second: float | None = None
    """Throughput over the last logging window, whole gang."""
    eta_seconds: float | None = None
    """Estimated seconds to the step/token budget."""
    last_committed_step: int | None = None
    """Step of the newest committed checkpoint."""
    updated_at: str | None = None
    """RFC 3339 time of this record."""


@dataclass
class Restarts:
    """Whole-gang restarts by reason."""

    failure: int = 0
    """After a pod or job failure (counts against training.maxRestarts)."""
    preemption: int = 0
    """After preemption/eviction (counts against training.maxPreemptions)."""


@dataclass
class Artifacts:
    """Where the run's outputs are."""

    dataset: str | None = None
    """URI of the prepared dataset manifest."""
    checkpoints: str | None = None
    """URI of the checkpoint folder."""
    model_version: str | None = None
    """URI of the exported Triton model version."""


@dataclass
class EstimateStatus:
    """Preflight result (kiln_api.estimate)."""

    params: int | None = None
    """Model parameters."""
    memory_per_device_bytes: int | None = None
    """Estimated peak memory per device."""
    device_memory_bytes: int | None = None
    """Memory available per device."""
    flops: float | None = None
    """Training FLOPs (6·N·tokens)."""
    hours: float | None = None
    """Estimated wall-clock hours at the assumed MFU."""
    cost: float | None = None
    """Estimated cost in USD."""
    step_seconds: float | None = None
    """Estimated wall seconds per optimizer step."""
    actual_step_seconds: float | None = None
    """Measured seconds per step (from the trainer's last progress record), set when training ends."""
    step_ratio: float | None = None
    """stepSeconds / actualStepSeconds: 1.0 means the estimate was exact."""


@dataclass
class TrainingJobRef:
    """The training child the operator chose."""

    kind: str = knob(enum=("PyTorchJob", "IndexedJob"))
    """PyTorchJob or IndexedJob (decided once, at first Training reconcile)."""
    name: str = knob(max_length=253)
    """Child object name."""


@dataclass
class QueueStatus:
    """Kueue's Workload for the training job (spec.queue), as the operator last counted it."""

    workload: str | None = knob(None, max_length=253)
    """Name of the Workload Kueue made for the current training job."""
    preemptions: int = knob(0, minimum=0)
    """Evictions by preemption of that Workload already added to restarts.preemption."""


@dataclass
class TrainingRunStatus:
    """Observed state, written by the operator (and status.progress by the trainer)."""

    phase: str | None = knob(None, enum=PHASES)
    """Pending → Preparing → Training → Exporting → RollingOut → Succeeded (Failed, Suspended)."""
    observed_generation: int | None = None
    """metadata.generation the operator last acted on."""
    conditions: list[Condition] = knob(factory=list, max_items=16)
    """Ready plus one per stage."""
    progress: Progress | None = None
    """Trainer progress."""
    restarts: Restarts | None = None
    """Gang restarts by reason."""
    gpu_hours: float | None = None
    """Device-hours used so far."""
    estimated_cost: float | None = None
    """USD so far at the budget's price."""
    artifacts: Artifacts | None = None
    """Outputs."""
    estimate: EstimateStatus | None = None
    """Preflight numbers."""
    training_job: TrainingJobRef | None = None
    """The training child."""
    queue: QueueStatus | None = None
    """Kueue admission bookkeeping (spec.queue)."""
    message: str | None = knob(None, max_length=4096)
    """Last notable event, human readable."""
    accounted_at: str | None = None
    """RFC 3339 time up to which gpuHours has been counted."""


_PROGRESS_KEYS = {
    "step": "step",
    "tokens": "tokens",
    "loss": "loss",
    "tokens_per_s": "tokensPerSecond",
    "eta_seconds": "etaSeconds",
    "last_committed_step": "lastCommittedStep",
    "updated_at": "updatedAt",
}


def progress_patch(record: dict[str, Any]) -> dict[str, Any]:
    """The status merge-patch body for a trainer progress record (snake_case keys as the trainer's sink).

    The trainer sends ``{"status": {"progress": ...}}`` as a merge patch to the ``status`` subresource
    of its own TrainingRun (env KILN_RUN_NAME / KILN_RUN_NAMESPACE), using the pod's ServiceAccount.
    """
    unknown = sorted(set(record) - set(_PROGRESS_KEYS))
    if unknown:
        raise SpecError(f"progress.{unknown[0]}", f"unknown key (known: {', '.join(_PROGRESS_KEYS)})")
    body = {_PROGRESS_KEYS[k]: v for k, v in record.items() if v is not None}
    from_dict(Progress, body, "status.progress")  # type check before it reaches the API server
    return {"status": {"progress": body}}
