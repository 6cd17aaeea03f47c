"""Cooperation with Kueue (spec.queue): how the training job asks to be queued, and what Kueue says.

The training job (PyTorchJob or Indexed Job) carries Kueue's standard labels and is created
suspended; Kueue makes a Workload for it, reserves quota in the LocalQueue's ClusterQueue and
unsuspends the job when it is admitted. The Workload's conditions are the one source of why a run
waits; its ``schedulingStats.evictions`` count how often Kueue preempted it, so each preemption is
counted once even when the operator restarts in between. Pure functions, unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kiln_api.trainingrun import TrainingRunSpec

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
"""Kueue labels each Workload with the uid of the job it stands for."""
WORKLOAD_API = ("kueue.x-k8s.io/v1beta2", "Workload")
PREEMPTED = "Preempted"
"""Kueue's eviction reason when a higher-priority (or reclaiming) workload takes the quota."""


def queue_labels(spec: TrainingRunSpec) -> dict[str, str]:
    """The labels Kueue reads on a job: its LocalQueue and, optionally, its WorkloadPriorityClass."""
    if spec.queue is None:
        return {}
    out = {QUEUE_LABEL: spec.queue}
    if spec.queue_priority is not None:
        out[PRIORITY_LABEL] = spec.queue_priority
    return out


def queued(spec: TrainingRunSpec, job: dict[str, Any]) -> dict[str, Any]:
    """``job`` labelled for its queue and created suspended (Kueue unsuspends it on admission);
    unchanged without spec.queue."""
    labels = queue_labels(spec)
    if not labels:
        return job
    job["metadata"]["labels"].update(labels)
    if job["kind"] == "PyTorchJob":
        job["spec"]["runPolicy"]["suspend"] = True
    else:
        job["spec"]["suspend"] = True
    return job


def suspended(job: dict[str, Any]) -> bool:
    """Whether the job is suspended now (waiting for admission, or preempted)."""
    spec = job.get("spec") or {}
    if job.get("kind") == "PyTorchJob":
        return bool((spec.get("runPolicy") or {}).get("suspend"))
    return bool(spec.get("suspend"))


def workload_of(workloads: list[dict[str, Any]], job_uid: str) -> dict[str, Any] | None:
    """The Workload Kueue made for the job with ``job_uid`` (its owner), if any yet."""
    for wl in workloads:
        owners = (wl.get("metadata") or {}).get("ownerReferences") or []
        if any(o.get("uid") == job_uid for o in owners):
            return wl
    return None


@dataclass(frozen=True)
class QueueState:
    """What Kueue says about a training job."""

    admitted: bool
    """The Workload holds quota and its admission checks passed."""
    reason: str
    """Kueue's CamelCase reason (e.g. Pending, Inadmissible, Admitted, Preempted)."""
    message: str
    """Kueue's sentence (e.g. which resource lacks quota in which flavor)."""
    workload: str | None
    """The Workload's name (None before Kueue made it)."""
    preemptions: int
    """Times Kueue evicted this Workload by preemption."""


def _conditions(wl: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(c.get("type")): c for c in (wl.get("status") or {}).get("conditions") or []}


def _preemptions(wl: dict[str, Any]) -> int:
    evictions = ((wl.get("status") or {}).get("schedulingStats") or {}).get("evictions") or []
    return sum(int(e.get("count") or 0) for e in evictions if e.get("reason") == PREEMPTED)


def queue_state(wl: dict[str, Any] | None, queue: str) -> QueueState:
    """Kueue's verdict from the Workload: admitted, or why it waits (the newest eviction first,
    then the quota reservation's reason, which names the resource and flavor that lack quota)."""
    if wl is None:
        return QueueState(False, "WorkloadPending", f"waiting for Kueue to create the Workload (LocalQueue {queue})",
                          None, 0)
    name = str(wl["metadata"]["name"])
    conds = _conditions(wl)
    count = _preemptions(wl)
    admitted = conds.get("Admitted") or {}
    if admitted.get("status") == "True":
        return QueueState(True, "Admitted", str(admitted.get("message") or "admitted by Kueue"), name, count)
    evicted = conds.get("Evicted") or {}
    if evicted.get("status") == "True":
        return QueueState(False, str(evicted.get("reason") or "Evicted"), str(evicted.get("message") or ""), name, count)
    reserved = conds.get("QuotaReserved") or {}
    if reserved:
        reason = str(reserved.get("reason") or "Pending")
        return QueueState(False, reason, str(reserved.get("message") or ""), name, count)
    return QueueState(False, "Pending", f"Workload {name} waits for Kueue (LocalQueue {queue})", name, count)


def new_preemptions(state: QueueState, recorded: dict[str, Any] | None) -> int:
    """Preemptions of ``state``'s Workload not yet counted (status.queue records what was); a new
    Workload (the job was recreated) starts from zero."""
    recorded = recorded or {}
    if state.workload is None:
        return 0
    before = int(recorded.get("preemptions") or 0) if recorded.get("workload") == state.workload else 0
    return max(state.preemptions - before, 0)
