"""The Training step's side of Kueue: report Queued while the training job waits, count preemptions.

While Kueue keeps the job suspended the run stays in phase Training with condition ``Queued`` True,
carrying Kueue's own reason and message (read from the job's Workload), and no device-hours are
counted. Once admitted ``Queued`` turns False (reason Admitted). A preemption by Kueue suspends the
admitted job again: its pods get SIGTERM and commit an emergency checkpoint, and when Kueue readmits
the job they resume from the newest committed one. It is counted in ``restarts.preemption`` (budget
``training.maxPreemptions``), never as a failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln_operator import queueing
from kiln_operator.status import Transition, set_condition

if TYPE_CHECKING:
    from kiln_operator.phases import Ctx

CONDITION = "Queued"


def _state(ctx: Ctx, job: dict[str, Any]) -> queueing.QueueState:
    api, kind = queueing.WORKLOAD_API
    if not ctx.kube.has_api(api, "workloads"):
        return queueing.QueueState(False, "KueueUnavailable", f"spec.queue is set but the API server serves no "
                                   f"{api} workloads: is Kueue installed? The training job stays suspended", None, 0)
    uid = str(job["metadata"].get("uid") or "")
    found = ctx.kube.list(api, kind, ctx.run.namespace, f"{queueing.JOB_UID_LABEL}={uid}")
    return queueing.queue_state(queueing.workload_of(found, uid), str(ctx.run.spec.queue))


def _report(ctx: Ctx, waiting: bool, state: queueing.QueueState) -> None:
    conditions = list(ctx.status_patch.get("conditions") or ctx.status.get("conditions") or [])
    generation = int(ctx.status.get("observedGeneration") or 0)
    ctx.status_patch["conditions"] = set_condition(
        conditions, CONDITION, "True" if waiting else "False", state.reason, state.message, ctx.now.isoformat(),
        generation)
    if waiting:
        ctx.status_patch["message"] = f"queued in LocalQueue {ctx.run.spec.queue}: {state.reason}: {state.message}"
        # Waiting for quota uses no devices: undo this tick's device-hours (the clock restarts now).
        for key in ("gpuHours", "estimatedCost"):
            ctx.status_patch[key] = float(ctx.status.get(key) or 0.0)


def _count_preemptions(ctx: Ctx, state: queueing.QueueState) -> Transition | None:
    fresh = queueing.new_preemptions(state, ctx.status.get("queue"))
    if state.workload is not None:
        ctx.status_patch["queue"] = {"workload": state.workload, "preemptions": state.preemptions}
    if fresh == 0:
        return None
    restarts = dict(ctx.status.get("restarts") or {"failure": 0, "preemption": 0})
    restarts["preemption"] = int(restarts.get("preemption", 0)) + fresh
    ctx.status_patch["restarts"] = restarts
    limit = ctx.run.spec.training.max_preemptions
    if restarts["preemption"] > limit:
        return Transition("Failed", "RestartBudgetExhausted",
                          f"{restarts['preemption'] - 1} preemption restarts used (limit {limit}); "
                          f"last: Kueue {state.reason}: {state.message}")
    # Reason GangRestart with "preemption" in the message: the restart metric counts it as one.
    ctx.event("GangRestart", f"restart {restarts['preemption']}/{limit} after preemption: Kueue evicted "
                             f"Workload {state.workload} ({state.reason}: {state.message}); it resumes from the "
                             "newest committed checkpoint when readmitted", warning=True)
    return None


def check(ctx: Ctx, job: dict[str, Any]) -> tuple[bool, Transition | None]:
    """(waiting for Kueue, transition) for a queued run's training job that has not ended."""
    state = _state(ctx, job)
    waiting = queueing.suspended(job)
    if state.reason == "KueueUnavailable":  # only a person can install it: Stalled with the cause
        ctx.hold = (state.reason, state.message)
    _report(ctx, waiting, state)
    return waiting, _count_preemptions(ctx, state)
