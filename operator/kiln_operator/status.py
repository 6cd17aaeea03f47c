"""The phase machine and the conditions that report it (pure functions, unit-tested).

Conditions follow the kstatus conventions (what Flux and the chart's Argo CD health Lua read), set from
the first reconcile on and always with ``observedGeneration``:

* ``Ready``: True only when Succeeded;
* ``Reconciling``: True while the run works towards its goal (every non-terminal phase but Suspended,
  unless held);
* ``Stalled``: True when it cannot get there without a person: Failed, or held in its phase by
  something only a person can fix (a missing Secret or teacher run, a child the API refuses), with
  that cause as reason and message;
* one per stage (``Prepared``, ``Trained``, ``Exported``, ``RolledOut``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kiln_api.runstatus import TERMINAL_PHASES
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
    return _summary(out, phase, reason, message, now, generation)


def _summary(conditions: list[dict[str, Any]], phase: str, reason: str, message: str, now: str,
             generation: int, held: bool = False) -> list[dict[str, Any]]:
    """Ready, Reconciling and Stalled for ``phase``; ``held``: stuck in it on a cause a person must fix."""
    ready = "True" if phase == "Succeeded" else "False"
    out = set_condition(conditions, "Ready", ready, reason if phase != "Succeeded" else "Succeeded", message, now,
                        generation)
    # kstatus reads Reconciling before Stalled: a held run must not claim to be reconciling.
    working = phase not in TERMINAL_PHASES and phase != "Suspended" and not held
    out = set_condition(out, "Reconciling", "True" if working else "False", reason if working else phase,
                        message if working else "", now, generation)
    stalled = phase == "Failed" or held
    return set_condition(out, "Stalled", "True" if stalled else "False", reason if stalled else "Progressing",
                         message if stalled else "", now, generation)


def initial_conditions(generation: int, now: str) -> list[dict[str, Any]]:
    """What a run carries from its first reconcile, before any phase moves: in progress, not ready."""
    return _summary([], "Pending", "Reconciling", "the operator is checking the run", now, generation)


def hold_patch(status: dict[str, Any], reason: str, message: str, now: str, generation: int,
               held: bool = True) -> dict[str, Any]:
    """The run stays in its phase but cannot go on until a person acts (``Stalled`` with the cause);
    ``held=False`` clears that once the cause is gone."""
    phase = status.get("phase") or "Pending"
    conditions = _summary(list(status.get("conditions") or []), phase, reason, message, now, generation, held=held)
    return {"conditions": conditions, "observedGeneration": generation, "message": message}


def refresh_generation(status: dict[str, Any], generation: int) -> dict[str, Any]:
    """Mark every condition as current for ``generation`` (an edit of a finished run changes nothing else)."""
    conditions = [{**c, "observedGeneration": generation} for c in status.get("conditions") or []]
    return {"observedGeneration": generation, **({"conditions": conditions} if conditions else {})}


def transition_patch(status: dict[str, Any], t: Transition, now: str, generation: int) -> dict[str, Any]:
    """The status patch for a transition; raises ValueError for a move the machine does not allow."""
    previous = status.get("phase") or "Pending"
    if t.to != previous and t.to not in TRANSITIONS[previous]:
        raise ValueError(f"illegal phase transition {previous} → {t.to}")
    conditions = conditions_for(t.to, previous, list(status.get("conditions") or []), t.reason, t.message,
                                now, generation)
    return {"phase": t.to, "conditions": conditions, "observedGeneration": generation, "message": t.message}
