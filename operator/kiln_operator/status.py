"""The phase machine and the conditions that report it (pure functions, unit-tested).

Conditions: ``Ready`` (True only when Succeeded), one per stage (``Prepared``, ``Trained``,
``Exported``, ``RolledOut``) and ``Stalled`` (True on Failed) — what kstatus/Flux and the Argo CD
health check read, always with ``observedGeneration``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kiln_api.trainingrun import TrainingRunSpec

STAGE_CONDITION = {"Preparing": "Prepared", "Training": "Trained", "Exporting": "Exported",
                   "RollingOut": "RolledOut"}

# Allowed moves; anything else is a bug in a handler, refused loudly.
TRANSITIONS: dict[str, frozenset[str]] = {
    "Pending": frozenset({"Preparing", "Failed"}),
    "Preparing": frozenset({"Training", "Failed"}),
    "Training": frozenset({"Exporting", "Suspended", "Failed"}),
    "Suspended": frozenset({"Training", "Failed"}),
    "Exporting": frozenset({"RollingOut", "Succeeded", "Failed"}),
    "RollingOut": frozenset({"Succeeded", "Failed"}),
    "Succeeded": frozenset(),
    "Failed": frozenset(),
}


def after_export(spec: TrainingRunSpec) -> str:
    """RollingOut only when a serving target is asked for; otherwise the run ends after Exporting."""
    return "RollingOut" if spec.serving is not None else "Succeeded"


@dataclass(frozen=True)
class Transition:
    """A phase change with the reason recorded on the conditions and in an event."""

    to: str
    """Target phase."""
    reason: str
    """CamelCase reason."""
    message: str
    """Human-readable detail."""


def set_condition(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str,
                  now: str, generation: int) -> list[dict[str, Any]]:
    """Replace one condition; lastTransitionTime moves only when its status changes."""
    old = next((c for c in conditions if c.get("type") == ctype), None)
    since = old["lastTransitionTime"] if old is not None and old.get("status") == status else now
    new = {"type": ctype, "status": status, "reason": reason, "message": message[:4000],
           "lastTransitionTime": since, "observedGeneration": generation}
    return [c for c in conditions if c.get("type") != ctype] + [new]


def conditions_for(phase: str, previous: str, conditions: list[dict[str, Any]], reason: str, message: str,
                   now: str, generation: int) -> list[dict[str, Any]]:
    """The conditions after entering ``phase`` from ``previous``."""
    out = list(conditions)
    done = STAGE_CONDITION.get(previous)
    if done and phase not in ("Failed", "Suspended", previous):
        out = set_condition(out, done, "True", "Completed", f"{previous} finished", now, generation)
    stage = STAGE_CONDITION.get(phase)
    if stage:
        out = set_condition(out, stage, "False", "InProgress", message, now, generation)
    if phase == "Failed" and done:
        out = set_condition(out, done, "False", reason, message, now, generation)
    ready = "True" if phase == "Succeeded" else "False"
    out = set_condition(out, "Ready", ready, reason if phase != "Succeeded" else "Succeeded", message, now,
                        generation)
    stalled = "True" if phase == "Failed" else "False"
    return set_condition(out, "Stalled", stalled, reason if phase == "Failed" else "Progressing",
                         message if phase == "Failed" else "", now, generation)


def transition_patch(status: dict[str, Any], t: Transition, now: str, generation: int) -> dict[str, Any]:
    """The status patch for a transition; raises ValueError for a move the machine does not allow."""
    previous = status.get("phase") or "Pending"
    if t.to != previous and t.to not in TRANSITIONS[previous]:
        raise ValueError(f"illegal phase transition {previous} → {t.to}")
    conditions = conditions_for(t.to, previous, list(status.get("conditions") or []), t.reason, t.message,
                                now, generation)
    return {"phase": t.to, "conditions": conditions, "observedGeneration": generation, "message": t.message}
