"""kopf handlers for TrainingRun: read spec → step the phase machine → patch status → events.

One timer per run drives everything (kopf runs it immediately on creation and on operator start,
then every ``RECONCILE_INTERVAL`` seconds), so there is exactly one writer of the phase per run.
"""

from __future__ import annotations

import os
import time
from typing import Any

import kopf
from kiln_api import trainingrun as tr
from kiln_api.specfields import SpecError

from kiln_operator import metrics, phases, rollout
from kiln_operator.builders.common import Run
from kiln_operator.kube import AdoptionConflict, Kube
from kiln_operator.status import Transition, transition_patch

RECONCILE_INTERVAL = float(os.environ.get("KILN_RECONCILE_INTERVAL", "5"))

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


@kopf.timer(tr.GROUP, tr.VERSION, tr.PLURAL, interval=RECONCILE_INTERVAL)
def reconcile(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch,
              name: str, namespace: str | None, uid: str, logger: kopf.Logger, **_: Any) -> None:
    assert namespace is not None  # TrainingRun is namespaced
    phase = status.get("phase") or "Pending"
    metrics.observe_phase(f"{namespace}/{name}", phase)
    if phase in tr.TERMINAL_PHASES:
        return
    assert _kube is not None, "startup did not configure the API client"
    started = time.monotonic()
    generation = int(meta.get("generation") or 0)
    current = dict(status)
    ctx_now = phases.now_utc()
    try:
        run = Run(name, namespace, uid, tr.parse_spec(dict(spec)))
    except SpecError as e:
        _apply(body, patch, current, Transition("Failed", "InvalidSpec", str(e)), ctx_now.isoformat(), generation)
        raise kopf.PermanentError(str(e)) from e
    ctx = phases.Ctx(_kube, run, current, ctx_now)
    try:
        t = STEPS[phase](ctx)
    except AdoptionConflict as e:
        metrics.RECONCILE_ERRORS.labels(phase=phase).inc()
        raise kopf.TemporaryError(str(e), delay=10) from e
    finally:
        metrics.RECONCILE_SECONDS.labels(phase=phase).observe(time.monotonic() - started)
    for etype, reason, message in ctx.events:
        kopf.event(body, type=etype, reason=reason, message=message[:1000])
        if reason == "GangRestart":
            metrics.RESTARTS.labels(reason="preemption" if "preemption" in message else "failure").inc()
    patch.status.update(ctx.status_patch)
    patch.status["observedGeneration"] = generation
    if t is not None:
        _apply(body, patch, {**current, **ctx.status_patch}, t, ctx_now.isoformat(), generation)
        logger.info("phase %s → %s (%s)", phase, t.to, t.reason)
        metrics.observe_phase(f"{namespace}/{name}", t.to)


@kopf.on.delete(tr.GROUP, tr.VERSION, tr.PLURAL, optional=True)
def forget(name: str, namespace: str | None, **_: Any) -> None:
    """Children go with the run through owner references; only the phase gauge needs updating."""
    metrics.observe_phase(f"{namespace}/{name}", None)
