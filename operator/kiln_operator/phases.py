"""One step function per phase: look at the children, create what is missing, say where to go next.

A step never loops or sleeps: it returns a Transition (or None to stay) and the timer calls it
again. Children have fixed names and are created with create-or-adopt, so any step can be repeated
after an operator crash without duplicates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kiln_api.contract import EXIT_QUANTIZATION_REJECTED
from kiln_api.estimate import estimate, explain
from kiln_api.estimate_calibration import estimate_vs_actual
from kiln_api.presets import ACCELERATORS
from kiln_api.s3layout import RunLayout
from kiln_api.specfields import SpecError

from kiln_operator import causes, children, queuewait
from kiln_operator.builders.common import LABEL_RUN, LABEL_STAGE, Run
from kiln_operator.builders.export_job import build_export_job
from kiln_operator.builders.indexed_job import build_headless_service, build_indexed_job
from kiln_operator.builders.prepare_job import build_prepare_job
from kiln_operator.builders.pytorchjob import build_pytorchjob
from kiln_operator.builders.rbac import build_rbac
from kiln_operator.configmap import TRAINING_HASH, build_config_map, compiled, dataset_uri
from kiln_operator.kube import Kube
from kiln_operator.policy import Policy
from kiln_operator.progress import build_progress_configmap, copy_progress
from kiln_operator.status import Transition, after_export


@dataclass
class Ctx:
    """What a step works with; it writes status fields and events here, the handler applies them."""

    kube: Kube
    """API access."""
    run: Run
    """The run (identity and parsed spec)."""
    status: dict[str, Any]
    """status as last seen."""
    now: datetime
    """Time of this reconcile."""
    status_patch: dict[str, Any] = field(default_factory=dict)
    """Status fields to merge besides the phase/conditions."""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(type, reason, message) to post as Kubernetes events."""
    transition: Transition | None = None
    """What the step decided (set by the handler from the step's return value)."""
    hold: tuple[str, str] | None = None
    """(reason, message) when the run cannot leave its phase until a person acts (a missing Secret,
    image or referenced run): the handler reports it as ``Stalled`` and the step looks again next tick."""

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(("Warning" if warning else "Normal", reason, message))


Step = Callable[[Ctx], Transition | None]


def _ensure(ctx: Ctx, obj: dict[str, Any]) -> dict[str, Any]:
    got, created = ctx.kube.create_or_adopt(obj)
    if created:
        ctx.event("Created", f"{obj['kind']} {obj['metadata']['name']}")
    return got


def step_pending(ctx: Ctx) -> Transition | None:
    """Referenced runs, compile, preflight, then the per-run RBAC and ConfigMap; a run that cannot compile
    or fit fails here. No spec makes this raise: anything the pure part throws becomes PreflightError."""
    forbidden = Policy.from_env().violation(ctx.run)  # the chart's admission policy, checked again
    if forbidden is not None:
        return Transition("Failed", "PolicyViolation", forbidden)
    ctx.hold, failed = causes.missing_references(ctx.kube, ctx.run)
    if failed is not None or ctx.hold is not None:
        return failed
    try:
        config_map = build_config_map(ctx.run)
        est = estimate(ctx.run.spec)
    except SpecError as e:  # a rule over the preset's values, or a step config refusing the spec
        return Transition("Failed", "InvalidSpec", str(e))
    except Exception as e:  # noqa: BLE001 — a shape the compiler or estimator cannot handle is the spec's fault
        return Transition("Failed", "PreflightError", f"the spec could not be compiled: {type(e).__name__}: {e}")
    ctx.status_patch["estimate"] = {
        "params": est.params, "memoryPerDeviceBytes": est.memory.total, "deviceMemoryBytes": est.device_memory,
        "flops": est.flops, "hours": est.hours, "cost": est.cost, "stepSeconds": est.step_seconds,
    }
    if not est.fits:
        return Transition("Failed", "PreflightFailed", explain(est))
    for obj in [*build_rbac(ctx.run), build_progress_configmap(ctx.run), config_map]:
        _ensure(ctx, obj)
    for note in compiled(ctx.run).notes:  # preset values the compiler adapted to this run, e.g. a shorter warmup
        ctx.event("PresetAdjusted", note)
    layout = RunLayout.of(ctx.run.spec.storage.uri, ctx.run.namespace, ctx.run.name)
    ctx.status_patch["artifacts"] = {"dataset": dataset_uri(ctx.run), "checkpoints": layout.checkpoints()}
    return Transition("Preparing", "PreflightPassed", explain(est))


def step_preparing(ctx: Ctx) -> Transition | None:
    job = _ensure(ctx, build_prepare_job(ctx.run))
    state, message = children.outcome(job)
    if state == "Succeeded":
        return Transition("Training", "DataPrepared", "dataset ready")
    if state == "Failed":
        return causes.job_failed(ctx.kube, ctx.run, job, "PrepareFailed", message)
    ctx.hold = causes.job_hold(ctx.kube, ctx.run, job, causes.job_pods(ctx.kube, ctx.run, job))
    return None


def _training_kind(ctx: Ctx) -> str | None:
    """PyTorchJob or IndexedJob, decided once and kept in status.trainingJob."""
    recorded = (ctx.status.get("trainingJob") or {}).get("kind")
    if recorded:
        return str(recorded)
    launcher = ctx.run.spec.launcher
    has_kubeflow = ctx.kube.has_api("kubeflow.org/v1", "pytorchjobs")
    if launcher == "IndexedJob" or (launcher == "Auto" and not has_kubeflow):
        return "IndexedJob"
    return "PyTorchJob" if has_kubeflow else None


def _account(ctx: Ctx) -> float:
    """Add the device-hours since the last reconcile to status.gpuHours; returns the new total."""
    total = float(ctx.status.get("gpuHours") or 0.0)
    since = ctx.status.get("accountedAt")
    if since:
        elapsed = (ctx.now - datetime.fromisoformat(since)).total_seconds()
        total += max(elapsed, 0.0) / 3600.0 * ctx.run.spec.training.devices()
    ctx.status_patch["gpuHours"] = total
    ctx.status_patch["accountedAt"] = ctx.now.isoformat()
    price = ctx.run.spec.budget.price_per_gpu_hour
    if price is None:
        price = ACCELERATORS[ctx.run.spec.training.accelerator].price_per_hour
    ctx.status_patch["estimatedCost"] = total * price
    return total


def _training_objects(ctx: Ctx, kind: str) -> list[dict[str, Any]]:
    if kind == "PyTorchJob":
        return [build_pytorchjob(ctx.run)]
    return [build_headless_service(ctx.run), build_indexed_job(ctx.run)]


def _restart(ctx: Ctx, job: dict[str, Any], message: str) -> Transition | None:
    """Whole-gang restart after a failure; preemptions have their own, larger budget."""
    pods = ctx.kube.list("v1", "Pod", ctx.run.namespace, f"{LABEL_RUN}={ctx.run.name},{LABEL_STAGE}=train")
    permanent = children.permanent_failure(pods)
    if permanent is not None:  # the same config would fail the same way: spend no restart on it
        cause = causes.failure_cause(ctx.kube, ctx.run, pods)
        return Transition("Failed", "InvalidConfig", f"{cause[1] if cause else permanent}; not restarted")
    reason = "preemption" if children.is_preemption(pods) else "failure"
    restarts = dict(ctx.status.get("restarts") or {"failure": 0, "preemption": 0})
    restarts[reason] = int(restarts.get(reason, 0)) + 1
    ctx.status_patch["restarts"] = restarts
    t = ctx.run.spec.training
    limit = t.max_preemptions if reason == "preemption" else t.max_restarts
    if restarts[reason] > limit:
        return Transition("Failed", "RestartBudgetExhausted",
                          f"{restarts[reason] - 1} {reason} restarts used (limit {limit}); last: {message}")
    ctx.kube.delete(job["apiVersion"], job["kind"], ctx.run.namespace, job["metadata"]["name"], "Foreground")
    ctx.event("GangRestart", f"restart {restarts[reason]}/{limit} after {reason}: {message}; "
                             "resuming from the newest committed checkpoint", warning=True)
    return None


def step_training(ctx: Ctx) -> Transition | None:
    t = _training(ctx)
    if t is not None:
        # Leaving Training stops the device-hour clock; null deletes the field in the merge patch.
        ctx.status_patch["accountedAt"] = None
    return t


def _training(ctx: Ctx) -> Transition | None:
    kind = _training_kind(ctx)
    if kind is None:
        return Transition("Failed", "LauncherUnavailable", "launcher PyTorchJob asked for, but the "
                          "kubeflow.org/v1 PyTorchJob API is not installed; use launcher: IndexedJob or Auto")
    objs = _training_objects(ctx, kind)
    main = objs[-1]
    name = main["metadata"]["name"]
    ctx.status_patch["trainingJob"] = {"kind": kind, "name": name}
    copy_progress(ctx.kube, ctx.run, ctx.status_patch)  # the trainer's record, validated
    used = _account(ctx)
    budget = ctx.run.spec.budget.max_gpu_hours
    existing = ctx.kube.get(main["apiVersion"], main["kind"], ctx.run.namespace, name)
    if budget is not None and used > budget:
        if existing is not None:
            ctx.kube.delete(main["apiVersion"], main["kind"], ctx.run.namespace, name, "Foreground")
        return Transition("Failed", "BudgetExceeded", f"{used:.2f} device-hours used, budget {budget}")
    if ctx.run.spec.suspend:
        if existing is not None and not children.terminating(existing):
            ctx.kube.delete(main["apiVersion"], main["kind"], ctx.run.namespace, name, "Foreground")
        return Transition("Suspended", "Suspended", "training pods stopped; they checkpoint on SIGTERM")
    if children.terminating(existing):
        return None  # a gang restart is under way: wait until the old pods are gone
    if existing is None and "trainingJob" in ctx.status:
        ctx.event("TrainingJobRecreated", f"{kind} {name} was missing; recreated (resumes from checkpoint)",
                  warning=True)
    job = existing
    for obj in objs:
        job = _ensure(ctx, obj)
    assert job is not None
    state, message = children.outcome(job)
    if state == "Succeeded":
        ctx.status_patch["estimate"] = estimate_vs_actual(ctx.status)
        return Transition("Exporting", "TrainingFinished", "training job succeeded")
    if state == "Failed":
        return _restart(ctx, job, message)
    if ctx.run.spec.queue is not None:
        waiting, queued_move = queuewait.check(ctx, job)
        if waiting or queued_move is not None:
            return queued_move
    ctx.hold = causes.job_hold(ctx.kube, ctx.run, job, ctx.kube.list(
        "v1", "Pod", ctx.run.namespace, f"{LABEL_RUN}={ctx.run.name},{LABEL_STAGE}=train"))
    return None


def _training_hash(obj: dict[str, Any]) -> str | None:
    return (obj["metadata"].get("annotations") or {}).get(TRAINING_HASH)


def apply_spec_change(ctx: Ctx) -> None:
    """Apply an edit of the spec's mutable fields (the CRD refuses edits of the immutable ones).

    The ConfigMap is recompiled; when what the training pods see changed (train.yaml, image,
    resources, scheduling, storage access) and the gang is running, it is restarted: deleting the
    training job stops the pods (they checkpoint on SIGTERM) and step_training starts a new gang that
    resumes from the last committed checkpoint. Safe to repeat: the gang is stopped before the new
    ConfigMap is written, so a crash in between only repeats both.
    """
    try:
        desired = build_config_map(ctx.run)
    except SpecError as e:  # a rule over preset values the CRD could not check
        ctx.event("SpecRejected", f"{e}; the run goes on with its previous configuration", warning=True)
        return
    meta = desired["metadata"]
    existing = ctx.kube.get("v1", "ConfigMap", ctx.run.namespace, meta["name"])
    if existing is None:
        return  # not written yet: step_pending writes the current one
    if existing.get("data") == desired["data"] and _training_hash(existing) == _training_hash(desired):
        return
    restart = _training_hash(existing) != _training_hash(desired) and ctx.status.get("phase") == "Training"
    job = ctx.status.get("trainingJob") or {}
    if restart and job.get("kind"):
        main = _training_objects(ctx, str(job["kind"]))[-1]
        existing_job = ctx.kube.get(main["apiVersion"], main["kind"], ctx.run.namespace, main["metadata"]["name"])
        if existing_job is not None and not children.terminating(existing_job):
            ctx.kube.delete(main["apiVersion"], main["kind"], ctx.run.namespace, main["metadata"]["name"],
                            "Foreground")
    ctx.kube.patch("v1", "ConfigMap", ctx.run.namespace, meta["name"],
                   {"metadata": {"annotations": meta["annotations"]}, "data": desired["data"]})
    ctx.event("SpecChanged", "spec edit applied: configuration recompiled" +
              ("; training gang restarting from the last committed checkpoint" if restart else ""))


def step_suspended(ctx: Ctx) -> Transition | None:
    if ctx.run.spec.suspend:
        return None
    return Transition("Training", "Resumed", "resuming from the newest committed checkpoint")


def step_exporting(ctx: Ctx) -> Transition | None:
    job = _ensure(ctx, build_export_job(ctx.run))
    state, message = children.outcome(job)
    if state == "Succeeded":
        layout = RunLayout.of(ctx.run.spec.storage.uri, ctx.run.namespace, ctx.run.name)
        artifacts = dict(ctx.status.get("artifacts") or {})
        artifacts["modelVersion"] = f"{layout.model_repository()}/{ctx.run.name}"
        ctx.status_patch["artifacts"] = artifacts
        nxt = after_export(ctx.run.spec)
        return Transition(nxt, "Exported", "model exported" + ("" if nxt == "RollingOut" else "; no serving"))
    if state == "Failed":
        # An INT8 variant over its perplexity bound published nothing: say so, with the export's numbers.
        pods = causes.job_pods(ctx.kube, ctx.run, job)
        rejected = children.exit_message(pods, EXIT_QUANTIZATION_REJECTED)
        if rejected is not None:
            return Transition("Failed", "QuantizationRejected",
                              rejected.removeprefix("QuantizationRejected: ") or "the INT8 perplexity gate failed")
        return causes.job_failed(ctx.kube, ctx.run, job, "ExportFailed", message)
    ctx.hold = causes.job_hold(ctx.kube, ctx.run, job, causes.job_pods(ctx.kube, ctx.run, job))
    return None


def now_utc() -> datetime:
    return datetime.now(UTC)
