"""The phase machine and its conditions (what kstatus, Flux and the Argo CD health check read)."""

from __future__ import annotations

from typing import Any

import pytest
from kiln_api.trainingrun import TrainingRunSpec
from kiln_operator import children
from kiln_operator.status import Transition, after_export, transition_patch


def _cond(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == ctype)


def test_walk_to_success_sets_stage_conditions() -> None:
    status: dict[str, Any] = {}
    walk = [("Preparing", "t1"), ("Training", "t2"), ("Exporting", "t3"), ("Succeeded", "t4")]
    for phase, now in walk:
        status = {**status, **transition_patch(status, Transition(phase, "R" + phase, "m"), now, 3)}
    assert status["phase"] == "Succeeded" and status["observedGeneration"] == 3
    for ctype, since in (("Prepared", "t2"), ("Trained", "t3"), ("Exported", "t4")):
        assert _cond(status, ctype)["status"] == "True"
        assert _cond(status, ctype)["lastTransitionTime"] == since
    assert _cond(status, "Ready")["status"] == "True"
    assert _cond(status, "Stalled")["status"] == "False"


def test_failure_marks_stage_and_stalled() -> None:
    status = transition_patch({}, Transition("Preparing", "PreflightPassed", ""), "t1", 1)
    status = transition_patch(status, Transition("Failed", "PrepareFailed", "boom"), "t2", 1)
    prepared = _cond(status, "Prepared")
    assert (prepared["status"], prepared["reason"], prepared["message"]) == ("False", "PrepareFailed", "boom")
    assert _cond(status, "Ready")["status"] == "False" and _cond(status, "Ready")["reason"] == "PrepareFailed"
    assert _cond(status, "Stalled")["status"] == "True"


def test_last_transition_time_moves_only_on_change() -> None:
    a = transition_patch({}, Transition("Preparing", "x", ""), "t1", 1)
    b = transition_patch(a, Transition("Preparing", "x", ""), "t2", 2)
    assert _cond(b, "Ready")["lastTransitionTime"] == "t1"
    assert _cond(b, "Ready")["observedGeneration"] == 2


def test_illegal_transition_is_refused() -> None:
    done = transition_patch({"phase": "Exporting"}, Transition("Succeeded", "x", ""), "t", 1)
    with pytest.raises(ValueError, match="Succeeded → Training"):
        transition_patch(done, Transition("Training", "x", ""), "t", 1)


def test_rollout_only_with_serving(tiny_spec: TrainingRunSpec) -> None:
    from dataclasses import replace

    from kiln_api.trainingrun import ServingSpec
    assert after_export(replace(tiny_spec, serving=None)) == "Succeeded"
    assert after_export(replace(tiny_spec, serving=ServingSpec(target="chat"))) == "RollingOut"


def test_child_outcomes() -> None:
    job_ok = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    job_bad = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                          "message": "Job has reached the specified backoff limit"}]}}
    ptj_run = {"status": {"conditions": [{"type": "Created", "status": "True"},
                                         {"type": "Running", "status": "True"}]}}
    assert children.outcome(job_ok) == ("Succeeded", "Complete")
    assert children.outcome(job_bad) == ("Failed", "BackoffLimitExceeded: Job has reached the specified backoff limit")
    assert children.outcome(ptj_run)[0] == "Running"
    assert children.outcome({"status": {"conditions": [{"type": "Failed", "status": "False"}]}})[0] == "Running"


def test_preemption_is_told_apart_from_failure() -> None:
    crashed = {"status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"exitCode": 1}}}]}}
    disrupted = {"status": {"phase": "Failed", "conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]}}
    evicted = {"status": {"phase": "Failed", "reason": "Evicted"}}
    assert not children.is_preemption([crashed])
    assert children.is_preemption([crashed, disrupted])
    assert children.is_preemption([evicted])
