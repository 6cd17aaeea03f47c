"""What makes a run due for a reconcile: a change of the run, a change of one of its children, or a time.

Pure functions, no API access: the watch handlers (handlers.py) map each event to the runs it concerns,
and after each reconcile the scheduler (workqueue.py) asks when the run must be looked at again even if
nothing changes. Nothing here polls: a run at rest costs no request until its next due time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from kiln_api import trainingrun as tr

from kiln_operator.builders.common import LABEL_RUN

RunKey = tuple[str, str]
"""(namespace, name) of a TrainingRun."""

SERVING_TARGET = "kiln.dev/serving-target"
"""Label of the serving Deployments and pods: they belong to a target that outlives runs, not to a run."""

HOLD_ANNOTATION = "kiln.dev/hold-rollout"

RESYNC_S = float(os.environ.get("KILN_RESYNC_SECONDS", "300"))
"""Every run is looked at again after this long without any change (a missed watch event heals here)."""

POLL_S = float(os.environ.get("KILN_RECONCILE_INTERVAL", "5"))
"""How often a run is looked at while it waits on something no watch reports: a held run (a missing
Secret, image or referenced run) and a rollout (Triton's readiness and the gate's answers)."""

MIN_DUE_S = 1.0
"""Never schedule closer than this: a deadline that just passed is checked once, not in a tight loop."""


def run_of_child(obj: Mapping[str, Any]) -> RunKey | None:
    """The run a child belongs to: its TrainingRun owner reference, else its ``kiln.dev/run`` label
    (pods are owned by their Job, not by the run, but carry the label through the pod template)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    if not namespace:
        return None
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == tr.KIND and str(ref.get("apiVersion", "")).startswith(f"{tr.GROUP}/"):
            return namespace, str(ref["name"])
    run = (meta.get("labels") or {}).get(LABEL_RUN)
    return (namespace, str(run)) if run else None


def runs_serving(obj: Mapping[str, Any], runs: Iterable[Mapping[str, Any]]) -> list[RunKey]:
    """Runs rolling out to the serving target an object (Deployment, pod) belongs to."""
    meta = obj.get("metadata") or {}
    target = (meta.get("labels") or {}).get(SERVING_TARGET)
    if not target:
        return []
    out = []
    for run in runs:
        rmeta = run.get("metadata") or {}
        serving = (run.get("spec") or {}).get("serving") or {}
        if rmeta.get("namespace") == meta.get("namespace") and serving.get("target") == target \
                and (run.get("status") or {}).get("phase") == "RollingOut":
            out.append((str(rmeta["namespace"]), str(rmeta["name"])))
    return out


def run_fingerprint(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a run, when it changes, needs a reconcile: the spec (generation), the rollout approval,
    the deletion. Status is left out on purpose: the operator writes it, and reacting to its own writes
    would reconcile every run again after every reconcile."""
    meta = body.get("metadata") or {}
    return (meta.get("generation"), (meta.get("annotations") or {}).get(HOLD_ANNOTATION),
            meta.get("deletionTimestamp"), meta.get("uid"))


def _held(status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Stalled" and c.get("status") == "True" for c in status.get("conditions") or [])


def _budget_due(spec: Mapping[str, Any], status: Mapping[str, Any], devices: int) -> float | None:
    """Seconds until the device-hours of a training run reach its budget (None without a budget)."""
    budget = (spec.get("budget") or {}).get("maxGpuHours")
    if budget is None or devices <= 0:
        return None
    used = float(status.get("gpuHours") or 0.0)
    return (float(budget) - used) * 3600.0 / devices


def due_in(spec: Mapping[str, Any], status: Mapping[str, Any], devices: int) -> float | None:
    """Seconds from the reconcile that wrote ``status`` until the run must be reconciled again if nothing
    changes; None for a run that is done (it only changes when its spec does, and that is a watch event)."""
    phase = status.get("phase") or "Pending"
    if phase in tr.TERMINAL_PHASES:
        return None
    due = RESYNC_S
    # Training polls too: a gang restart waits for the old job's pods to go (foreground deletion, the
    # trainers' emergency commit), and the integration test saw a deleted training job's last watch
    # event leave the run unrecreated for minutes. Runs at rest (held before training, done) do not poll.
    if _held(status) or phase in ("RollingOut", "Training"):
        due = min(due, POLL_S)
    if phase == "Training":
        budget = _budget_due(spec, status, devices)
        if budget is not None:
            due = min(due, budget)
    return max(due, MIN_DUE_S)
