"""Which watch event reconciles which run, and when a run at rest is due again (triggers.py, driver.py)."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest
from kiln_op_testlib import load_example
from kiln_operator import triggers
from kiln_operator.driver import Driver

RUN_REF = {"apiVersion": "kiln.dev/v1alpha1", "kind": "TrainingRun", "name": "tiny", "uid": "u1", "controller": True}


def _obj(namespace: str = "team-a", labels: dict[str, str] | None = None,
         owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "x", "namespace": namespace, "labels": labels or {}, "ownerReferences": owners or []}}


def _run(name: str = "tiny", phase: str | None = None, generation: int = 1, rv: str = "10",
         serving: str | None = None) -> dict[str, Any]:
    spec = copy.deepcopy(load_example("tiny.yaml")["spec"])
    if serving:
        spec["serving"] = {"target": serving}
    return {"apiVersion": "kiln.dev/v1alpha1", "kind": "TrainingRun", "spec": spec,
            "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}", "generation": generation,
                         "resourceVersion": rv},
            "status": {"phase": phase} if phase else {}}


def test_a_child_maps_to_its_owner_run_and_a_pod_to_its_label() -> None:
    assert triggers.run_of_child(_obj(owners=[RUN_REF])) == ("team-a", "tiny")
    assert triggers.run_of_child(_obj(labels={"kiln.dev/run": "tiny"},
                                      owners=[{"apiVersion": "batch/v1", "kind": "Job", "name": "tiny-prepare"}])) \
        == ("team-a", "tiny")
    # Another group's kind named TrainingRun is not ours; neither is an object with no label.
    assert triggers.run_of_child(_obj(owners=[{**RUN_REF, "apiVersion": "other.io/v1"}])) is None
    assert triggers.run_of_child(_obj(labels={"app": "x"})) is None


def test_serving_objects_wake_only_runs_rolling_out_to_their_target() -> None:
    runs = [_run("a", "RollingOut", serving="chat"), _run("b", "Training", serving="chat"),
            _run("c", "RollingOut", serving="other")]
    deployment = _obj(labels={triggers.SERVING_TARGET: "chat"})
    assert triggers.runs_serving(deployment, runs) == [("team-a", "a")]
    assert triggers.runs_serving(_obj(namespace="team-b", labels={triggers.SERVING_TARGET: "chat"}), runs) == []


def test_status_writes_are_not_a_change_of_the_run_but_edits_and_approvals_are() -> None:
    base = _run()
    written = {**base, "status": {"phase": "Preparing"}}
    assert triggers.run_fingerprint(written) == triggers.run_fingerprint(base)
    edited = copy.deepcopy(base)
    edited["metadata"]["generation"] = 2
    approved = copy.deepcopy(base)
    approved["metadata"]["annotations"] = {triggers.HOLD_ANNOTATION: "false"}
    assert triggers.run_fingerprint(edited) != triggers.run_fingerprint(base)
    assert triggers.run_fingerprint(approved) != triggers.run_fingerprint(base)


STALLED = {"type": "Stalled", "status": "True", "reason": "SecretNotFound"}


@pytest.mark.parametrize(("status", "want"), [
    ({"phase": "Succeeded"}, None),
    ({"phase": "Failed"}, None),
    ({"phase": "Preparing"}, triggers.RESYNC_S),
    ({"phase": "Training", "gpuHours": 0.5}, triggers.POLL_S),  # a gang restart waits on pods going away
    ({"phase": "Preparing", "conditions": [STALLED]}, triggers.POLL_S),
    ({"phase": "RollingOut"}, triggers.POLL_S),
])
def test_due_time_by_phase(status: dict[str, Any], want: float | None) -> None:
    assert triggers.due_in({}, status, devices=1) == want


def test_a_budget_is_checked_when_it_runs_out_not_before() -> None:
    spec = {"budget": {"maxGpuHours": 1.0}}
    # 2 devices, 0.999 of 1.0 device-hours used: 0.001 h / 2 devices = 1.8 s left (sooner than the poll).
    assert triggers.due_in(spec, {"phase": "Training", "gpuHours": 0.999}, devices=2) == pytest.approx(1.8)
    # Already over: once, soon, not in a tight loop.
    assert triggers.due_in(spec, {"phase": "Training", "gpuHours": 2.0}, devices=2) == triggers.MIN_DUE_S
    # Far away: the training poll comes first.
    assert triggers.due_in({"budget": {"maxGpuHours": 100.0}}, {"phase": "Training"}, devices=1) == triggers.POLL_S


class Writer:
    def __init__(self) -> None:
        self.writes: list[dict[str, Any]] = []

    def __call__(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(status)
        return {**_run(name, rv=str(100 + len(self.writes))), "status": status}


def _driver(step: Any = None) -> tuple[Driver, Writer]:
    writer = Writer()
    return Driver(step or (lambda body, patch: None), writer, workers=1), writer


def test_the_driver_queues_a_run_for_its_own_and_its_childrens_changes_only() -> None:
    driver, _ = _driver()
    key = ("team-a", "tiny")
    driver.run_event(None, _run())  # the initial listing
    assert driver.queue.queued(key)
    driver.queue = type(driver.queue)(driver.reconcile, 1)  # drained
    driver.run_event("MODIFIED", {**_run(rv="11"), "status": {"phase": "Preparing"}})
    assert not driver.queue.queued(key), "the operator's own status write queued the run again"
    assert driver.runs[key]["status"] == {"phase": "Preparing"}, "the latest body is kept"
    assert driver.child_event(_obj(owners=[RUN_REF])) == [key] and driver.queue.queued(key)
    assert driver.child_event(_obj(owners=[{**RUN_REF, "name": "unknown"}])) == []
    driver.run_event("MODIFIED", _run(rv="9"))  # an older event arriving late does not win
    assert driver.runs[key]["status"] == {"phase": "Preparing"}
    driver.run_event("DELETED", _run(rv="12"))
    assert key not in driver.runs


def test_a_reconcile_writes_only_a_changed_status_and_says_when_it_is_due() -> None:
    def step(body: dict[str, Any], patch: kopf.Patch) -> None:
        patch.status["phase"] = "Preparing"

    driver, writer = _driver(step)
    driver.run_event(None, _run())
    assert driver.reconcile(("team-a", "tiny")) == triggers.RESYNC_S
    assert writer.writes == [{"phase": "Preparing"}]
    assert driver.reconcile(("team-a", "tiny")) == triggers.RESYNC_S
    assert len(writer.writes) == 1, "an unchanged status was written again"


def test_a_temporary_error_retries_after_its_delay_and_a_deleting_run_is_left_alone() -> None:
    def step(body: dict[str, Any], patch: kopf.Patch) -> None:
        raise kopf.TemporaryError("API server: timeout", delay=7)

    driver, writer = _driver(step)
    driver.run_event(None, _run())
    assert driver.reconcile(("team-a", "tiny")) == 7
    going = _run(rv="20")
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    driver.run_event("MODIFIED", going)
    assert driver.reconcile(("team-a", "tiny")) is None and writer.writes == []
