"""TrainingRun objects in every phase, with the status the operator's own functions write.

Shared by the GitOps health tests: the chart's Argo CD Lua (test_health_lua.py) and Flux's kstatus
(test_kstatus.py, through the real sigs.k8s.io/cli-utils library). Each case carries the verdict both
tools must reach. ``python kiln_phase_objects.py DIR`` writes them as JSON files (for a Go program).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln_operator.status import Transition, hold_patch, initial_conditions, transition_patch


@dataclass(frozen=True)
class Case:
    name: str
    obj: dict[str, Any]
    argo: str
    """Argo CD health status."""
    kstatus: str
    """kstatus' Status (Flux's readiness)."""


def _obj(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "kiln.dev/v1alpha1", "kind": "TrainingRun",
                            "metadata": {"name": "tiny", "namespace": "team-a", "generation": generation},
                            "spec": {}}
    if status is not None:
        body["status"] = status
    return body


def _walk(*steps: tuple[str, str, str], generation: int = 1) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending", "conditions": initial_conditions(generation, "t0"),
                              "observedGeneration": generation}
    for i, (phase, reason, message) in enumerate(steps):
        status = {**status, **transition_patch(status, Transition(phase, reason, message), f"t{i + 1}", generation)}
    return status


PREP = ("Preparing", "PreflightPassed", "fits")
TRAIN = ("Training", "DataPrepared", "dataset ready")
EXPORT = ("Exporting", "TrainingFinished", "training job succeeded")


def cases() -> list[Case]:
    pending = _walk()
    held = {**pending, **hold_patch(pending, "InitFromNotFound", "spec.model.initFrom.run: TrainingRun team-a/base "
                                    "not found", "t1", 1)}
    preparing = _walk(PREP)
    secret = {**preparing, **hold_patch(preparing, "SecretNotFound", 'pod tiny-prepare-x: secret "s3" not found',
                                        "t2", 1)}
    return [
        # No status yet: kstatus has nothing to go by and says Current; that is why the operator writes
        # Reconciling on its first reconcile (kopf runs the timer at once on creation).
        Case("created", _obj(None), "Progressing", "Current"),
        Case("pending", _obj(pending), "Progressing", "InProgress"),
        Case("pending-held", _obj(held), "Degraded", "Failed"),
        Case("preparing", _obj(preparing), "Progressing", "InProgress"),
        Case("preparing-no-secret", _obj(secret), "Degraded", "Failed"),
        Case("training", _obj(_walk(PREP, TRAIN)), "Progressing", "InProgress"),
        # Not Ready (a suspended run has not finished): Flux keeps waiting, Argo CD shows Suspended.
        Case("suspended", _obj(_walk(PREP, TRAIN, ("Suspended", "Suspended", "stopped"))), "Suspended", "InProgress"),
        Case("exporting", _obj(_walk(PREP, TRAIN, EXPORT)), "Progressing", "InProgress"),
        Case("rolling-out", _obj(_walk(PREP, TRAIN, EXPORT, ("RollingOut", "Exported", "model exported"))),
             "Progressing", "InProgress"),
        Case("succeeded", _obj(_walk(PREP, TRAIN, EXPORT, ("Succeeded", "Exported", "no serving"))),
             "Healthy", "Current"),
        Case("failed", _obj(_walk(PREP, ("Failed", "InvalidConfig", "vocab_size 512 is too small"))),
             "Degraded", "Failed"),
        Case("succeeded-then-edited", _obj(_walk(PREP, TRAIN, EXPORT, ("Succeeded", "Exported", "done")),
                                           generation=2), "Progressing", "InProgress"),
    ]


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for case in cases():
        (out / f"{case.name}.json").write_text(json.dumps(case.obj))
