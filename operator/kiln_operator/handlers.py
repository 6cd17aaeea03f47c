"""kopf handlers for TrainingRun: read spec → step the phase machine → patch status → events.

Reconciles are triggered by watch events, not by a timer per run: kopf watches the runs and their
children (Jobs, PyTorchJobs, ConfigMaps incl. the trainer's progress record, pods, serving
Deployments) and hands each event to the Driver (driver.py), which queues the run concerned and
calls ``reconcile`` on its latest body; time-based checks are scheduled by their due time
(triggers.py). One reconcile per run at a time, so there is exactly one writer of the phase per run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import kopf
from kiln_api import trainingrun as tr
from kiln_api.childnames import check_run_name
from kiln_api.specfields import SpecError
from kubernetes.client.exceptions import ApiException

from kiln_operator import metrics, phases, rollout, triggers
from kiln_operator.builders.common import LABEL_RUN, Run
from kiln_operator.driver import Driver
from kiln_operator.kube import AdoptionConflict, Kube
from kiln_operator.status import (
    Transition,
    hold_patch,
    initial_conditions,
    refresh_generation,
    transition_patch,
)

WORKERS = int(os.environ.get("KILN_WORKERS", "8"))
"""Reconciles running at once (threads: each mostly waits on the API server)."""

log = logging.getLogger("kiln.handlers")

STEPS: dict[str, phases.Step] = {
    "Pending": phases.step_pending,
    "Preparing": phases.step_preparing,
    "Training": phases.step_training,
    "Suspended": phases.step_suspended,
    "Exporting": phases.step_exporting,
    "RollingOut": rollout.step_rolling_out,
}

_kube: Kube | None = None


def set_kube(kube: Kube) -> None:
    """Called once from the startup handler."""
    global _kube
    _kube = kube


def _apply(body: kopf.Body, patch: kopf.Patch, status: dict[str, Any], t: Transition, now: str,
           generation: int) -> None:
    patch.status.update(transition_patch(status, t, now, generation))
    kopf.event(body, type="Warning" if t.to == "Failed" else "Normal", reason=t.reason,
               message=f"{status.get('phase') or 'Pending'} → {t.to}: {t.message}"[:1000])
    metrics.TRANSITIONS.labels(to=t.to, reason=t.reason).inc()


MAX_STEPS_PER_TICK = 4
"""Phases a run may pass in one reconcile (e.g. Pending → Preparing and the prepare Job at once)."""


def api_message(e: ApiException) -> str:
    """The API server's own sentence for a refused request (its Status object's message)."""
    try:
        return str(json.loads(e.body)["message"])
    except (TypeError, ValueError, KeyError):
        return f"{e.status} {e.reason}"


def _refused(ctx: phases.Ctx, e: ApiException) -> None:
    """A child the API server refuses: invalid (400/422) fails the run, since the same spec builds the
    same object; forbidden (403: quota, Pod Security, RBAC) holds it until a person changes the cluster."""
    message = f"the API server refused a child of this run: {api_message(e)}"
    if e.status in (400, 422):
        ctx.transition = Transition("Failed", "ChildRejected", message)
    else:
        ctx.hold = ("QuotaExceeded" if "quota" in message.lower() else "ChildForbidden", message)


def _step(kube: Kube, run: Run, phase: str, current: dict[str, Any], now: Any) -> phases.Ctx:
    """One phase step with its metrics; conflicts become kopf retries, refused children conditions."""
    started = time.monotonic()
    ctx = phases.Ctx(kube, run, current, now)
    try:
        ctx.transition = STEPS[phase](ctx)
    except AdoptionConflict as e:
        metrics.RECONCILE_ERRORS.labels(phase=phase).inc()
        ctx.hold = ("AdoptionConflict", str(e))
    except ApiException as e:
        metrics.RECONCILE_ERRORS.labels(phase=phase).inc()
        if e.status not in (400, 403, 422):
            raise kopf.TemporaryError(f"API server: {api_message(e)}", delay=10) from e
        _refused(ctx, e)
    finally:
        metrics.RECONCILE_SECONDS.labels(phase=phase).observe(time.monotonic() - started)
    return ctx


def reconcile(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch,
              name: str, namespace: str | None, uid: str, logger: kopf.Logger, **_: Any) -> None:
    assert namespace is not None  # TrainingRun is namespaced
    phase = status.get("phase") or "Pending"
    metrics.observe_phase(f"{namespace}/{name}", phase)
    generation = int(meta.get("generation") or 0)
    if phase in tr.TERMINAL_PHASES:
        # Nothing left to act on, but kstatus and Argo CD judge an edit by observedGeneration.
        if status.get("observedGeneration") != generation:
            patch.status.update(refresh_generation(dict(status), generation))
        return
    assert _kube is not None, "startup did not configure the API client"
    current = dict(status)
    now = phases.now_utc()
    if not current.get("conditions"):  # kstatus reads a run without conditions as Current: say otherwise
        current["conditions"] = initial_conditions(generation, now.isoformat())
        patch.status.update(phase="Pending", conditions=current["conditions"], observedGeneration=generation)
    try:
        check_run_name(name)  # the CRD refuses such names; a run created before it did fails here
        run = Run(name, namespace, uid, tr.parse_spec(dict(spec)))
    except SpecError as e:
        _apply(body, patch, current, Transition("Failed", "InvalidSpec", str(e)), now.isoformat(), generation)
        raise kopf.PermanentError(str(e)) from e
    seen = status.get("observedGeneration")
    if seen is not None and int(seen) != generation:
        edit = phases.Ctx(_kube, run, current, now)
        phases.apply_spec_change(edit)
        for etype, reason, message in edit.events:
            kopf.event(body, type=etype, reason=reason, message=message[:1000])
    patch.status["observedGeneration"] = generation
    # Keep stepping while the phase moves, so a new run gets its first Job in this reconcile rather
    # than after the event of its own status write; the loop is bounded and every step is idempotent anyway.
    for _attempt in range(MAX_STEPS_PER_TICK):
        ctx = _step(_kube, run, phase, current, now)
        for etype, reason, message in ctx.events:
            kopf.event(body, type=etype, reason=reason, message=message[:1000])
            if reason == "GangRestart":
                metrics.RESTARTS.labels(reason="preemption" if "preemption" in message else "failure").inc()
        patch.status.update(ctx.status_patch)
        current.update(ctx.status_patch)
        t = ctx.transition
        if t is None:
            _report_hold(body, patch, current, ctx.hold, now.isoformat(), generation)
            break
        _apply(body, patch, current, t, now.isoformat(), generation)
        current.update(patch.status)
        logger.info("phase %s → %s (%s)", phase, t.to, t.reason)
        metrics.observe_phase(f"{namespace}/{name}", t.to)
        if t.to not in STEPS or t.to == phase:
            break
        phase = t.to


def _report_hold(body: kopf.Body, patch: kopf.Patch, current: dict[str, Any], hold: tuple[str, str] | None,
                 now: str, generation: int) -> None:
    """Stalled with the cause while a step is held; cleared once it is not. An event when it starts."""
    stalled: dict[str, Any] = next((c for c in current.get("conditions") or [] if c.get("type") == "Stalled"), {})
    if hold is None and stalled.get("status") != "True":
        return
    reason, message = hold or ("Progressing", "")
    if hold is not None and (stalled.get("status"), stalled.get("reason")) != ("True", reason):
        kopf.event(body, type="Warning", reason=reason, message=message[:1000])
    update = hold_patch(current, reason, message, now, generation, held=hold is not None)
    patch.status.update(update)
    current.update(update)


def reconcile_body(body: dict[str, Any], patch: kopf.Patch) -> None:
    """``reconcile`` on a raw body, as the Driver calls it."""
    meta = body["metadata"]
    reconcile(body=body, spec=body.get("spec") or {}, status=body.get("status") or {}, meta=meta,  # type: ignore[arg-type]
              patch=patch, name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], logger=log)


def write_status(namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    assert _kube is not None, "startup did not configure the API client"
    return _kube.patch_status(f"{tr.GROUP}/{tr.VERSION}", tr.KIND, namespace, name, status)


@kopf.on.startup()
async def start_driver(memo: kopf.Memo, **_: Any) -> None:
    """The Driver lives in kopf's memo; its workers run on kopf's loop. Watch events, and so reconciles,
    only begin once every startup handler (`configure` sets the API client) has finished."""
    memo.driver = Driver(reconcile_body, write_status, WORKERS)


def _driver(memo: kopf.Memo) -> Driver:
    """The memo's Driver, its workers started from the first watch event: a watch handler's context
    carries kopf's event poster (a startup handler's does not), and the workers inherit it."""
    driver: Driver = memo.driver
    driver.queue.start()
    return driver


@kopf.on.cleanup()
async def stop_driver(memo: kopf.Memo, **_: Any) -> None:
    driver = memo.get("driver")
    if driver is not None:
        await driver.queue.stop()


@kopf.on.event(tr.GROUP, tr.VERSION, tr.PLURAL)
async def run_changed(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every watch event of a run: keep its latest body, queue it when its spec, approval or deletion
    moved (its status is the operator's own write and queues nothing)."""
    body: dict[str, Any] = dict(event["object"])
    if event["type"] == "DELETED":
        meta = body["metadata"]
        metrics.observe_phase(f"{meta['namespace']}/{meta['name']}", None)
    _driver(memo).run_event(event["type"], body)


def _kiln_child(labels: kopf.Labels, **_: Any) -> bool:
    return LABEL_RUN in labels or triggers.SERVING_TARGET in labels


async def child_changed(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A child changed (its status, or it was deleted): reconcile the run it belongs to."""
    _driver(memo).child_event(event["object"])


CHILD_KINDS = [("batch", "v1", "jobs"), ("kubeflow.org", "v1", "pytorchjobs"), ("v1", "configmaps"),
               ("v1", "pods"), ("apps", "v1", "deployments")]
"""What the phase logic reads besides the run: its Jobs, the training gang, its ConfigMaps (the trainer's
progress record among them), pods (why a gang failed, what holds it) and the serving Deployments."""

for _kind in CHILD_KINDS:  # core kinds are (version, plural), as kopf spells them
    kopf.on.event(*_kind, id=f"child-{_kind[-1]}", when=_kiln_child)(child_changed)


@kopf.on.delete(tr.GROUP, tr.VERSION, tr.PLURAL, optional=True)
def forget(name: str, namespace: str | None, **_: Any) -> None:
    """Children go with the run through owner references; only the phase gauge needs updating.
    Optional, so no finalizer: a run deleted while no operator runs (uninstalled, or down) goes at
    once instead of holding its namespace Terminating; a restarted operator starts with no state."""
    metrics.observe_phase(f"{namespace}/{name}", None)
