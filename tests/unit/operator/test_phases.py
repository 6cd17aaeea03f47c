"""Phase steps against an in-memory API (no cluster): create-or-adopt, gang restarts by reason,
budgets, suspend/resume, repair of a deleted training job."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from kiln_op_testlib import FakeKube
from kiln_operator import phases
from kiln_operator.builders.common import Run
from kiln_operator.kube import AdoptionConflict

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Driver:
    """Runs steps the way the handler does: status patch merged, transitions applied."""

    def __init__(self, run: Run, kube: FakeKube) -> None:
        self.run, self.kube, self.status, self.now = run, kube, {"phase": "Pending"}, T0
        self.events: list[str] = []

    def tick(self, seconds: float = 5) -> str:
        self.now += timedelta(seconds=seconds)
        ctx = phases.Ctx(self.kube, self.run, dict(self.status), self.now)  # type: ignore[arg-type]
        step = {"Pending": phases.step_pending, "Preparing": phases.step_preparing,
                "Training": phases.step_training, "Suspended": phases.step_suspended,
                "Exporting": phases.step_exporting}[self.status["phase"]]
        t = step(ctx)
        self.status.update(ctx.status_patch)
        self.events += [f"{r}: {m}" for _, r, m in ctx.events]
        if t is not None:
            self.status["phase"] = t.to
            self.status["reason"] = t.reason
        return str(self.status["phase"])


@pytest.fixture
def driver(tiny_run: Run) -> Driver:
    return Driver(replace(tiny_run, spec=replace(tiny_run.spec, serving=None)), FakeKube())


def _to_training(d: Driver) -> None:
    assert d.tick() == "Preparing"
    d.tick()
    d.kube.finish("Job", "tiny-prepare", "Complete")
    assert d.tick() == "Training"
    d.tick()
    assert ("PyTorchJob", "tiny-train") in d.kube.objs


def test_walk_is_idempotent(driver: Driver) -> None:
    _to_training(driver)
    creates = driver.kube.creates
    for _ in range(3):
        assert driver.tick() == "Training"
    assert driver.kube.creates == creates, "repeated ticks must not create anything"
    driver.kube.finish("PyTorchJob", "tiny-train", "Succeeded")
    assert driver.tick() == "Exporting"
    driver.tick()
    driver.kube.finish("Job", "tiny-export", "Complete")
    assert driver.tick() == "Succeeded"  # no spec.serving: no RollingOut
    assert driver.status["trainingJob"] == {"kind": "PyTorchJob", "name": "tiny-train"}
    # 2 pods × 4 ticks of 5 s after the clock started (the first Training tick only starts it).
    assert driver.status["gpuHours"] == pytest.approx(2 * 4 * 5 / 3600)
    assert driver.status["estimatedCost"] == pytest.approx(driver.status["gpuHours"] * 0.05)  # cpu list price


def test_indexed_job_without_kubeflow(tiny_run: Run) -> None:
    d = Driver(tiny_run, FakeKube(kubeflow=False))
    _to_training_indexed(d)
    assert ("Service", "tiny-train") in d.kube.objs
    assert d.status["trainingJob"]["kind"] == "IndexedJob"


def _to_training_indexed(d: Driver) -> None:
    d.tick()
    d.tick()
    d.kube.finish("Job", "tiny-prepare", "Complete")
    d.tick()
    d.tick()
    assert ("Job", "tiny-train") in d.kube.objs


def test_failure_restarts_whole_gang_until_budget(driver: Driver) -> None:
    _to_training(driver)
    for attempt in range(1, 4):  # maxRestarts = 3
        driver.kube.finish("PyTorchJob", "tiny-train", "Failed")
        assert driver.tick() == "Training"
        assert driver.status["restarts"]["failure"] == attempt
        assert "deletionTimestamp" in driver.kube.objs[("PyTorchJob", "tiny-train")]["metadata"]
        assert driver.tick() == "Training"  # old gang still terminating: wait, do not recreate
        driver.kube.gc()
        driver.tick()
        assert "status" not in driver.kube.objs[("PyTorchJob", "tiny-train")], "a fresh gang"
    driver.kube.finish("PyTorchJob", "tiny-train", "Failed")
    assert driver.tick() == "Failed" and driver.status["reason"] == "RestartBudgetExhausted"


def test_preemptions_do_not_use_the_failure_budget(driver: Driver) -> None:
    _to_training(driver)
    driver.kube.pods = [{"status": {"conditions": [{"type": "DisruptionTarget", "status": "True"}]}}]
    for _ in range(5):  # more than maxRestarts
        driver.kube.finish("PyTorchJob", "tiny-train", "Failed")
        assert driver.tick() == "Training"
        driver.kube.gc()
        driver.tick()
    assert driver.status["restarts"] == {"failure": 0, "preemption": 5}
    assert any("after preemption" in e for e in driver.events)


def test_a_bad_config_exit_fails_the_run_without_a_restart(driver: Driver) -> None:
    _to_training(driver)
    terminated = {"state": {"terminated": {"exitCode": 78}}}  # kiln_api.contract.EXIT_BAD_CONFIG
    driver.kube.pods = [{"metadata": {"name": "tiny-train-worker-0"}, "status": {"containerStatuses": [terminated]}}]
    driver.kube.finish("PyTorchJob", "tiny-train", "Failed")
    assert driver.tick() == "Failed" and driver.status["reason"] == "InvalidConfig"
    assert driver.status.get("restarts") is None
    assert "deletionTimestamp" not in driver.kube.objs[("PyTorchJob", "tiny-train")]["metadata"]


def test_deleted_training_job_is_recreated(driver: Driver) -> None:
    _to_training(driver)
    del driver.kube.objs[("PyTorchJob", "tiny-train")]
    assert driver.tick() == "Training"
    assert ("PyTorchJob", "tiny-train") in driver.kube.objs
    assert any(e.startswith("TrainingJobRecreated") for e in driver.events)


def test_suspend_and_resume(driver: Driver) -> None:
    _to_training(driver)
    driver.run = replace(driver.run, spec=replace(driver.run.spec, suspend=True))
    assert driver.tick() == "Suspended"
    assert "deletionTimestamp" in driver.kube.objs[("PyTorchJob", "tiny-train")]["metadata"]
    driver.kube.gc()
    hours = driver.status["gpuHours"]
    assert driver.tick(3600) == "Suspended"
    assert driver.status["gpuHours"] == hours, "a suspended run uses no device-hours"
    driver.run = replace(driver.run, spec=replace(driver.run.spec, suspend=False))
    assert driver.tick() == "Training"
    driver.tick()
    assert ("PyTorchJob", "tiny-train") in driver.kube.objs
    assert driver.status.get("restarts") is None, "suspend is not a restart"


def test_budget_exceeded_stops_training(driver: Driver) -> None:
    from kiln_api.trainingrun import BudgetSpec

    driver.run = replace(driver.run, spec=replace(driver.run.spec, budget=BudgetSpec(max_gpu_hours=0.01)))
    _to_training(driver)
    assert driver.tick(3600) == "Failed" and driver.status["reason"] == "BudgetExceeded"


def test_child_owned_by_another_run_is_not_taken(driver: Driver) -> None:
    other = copy.deepcopy(driver.kube.objs.get(("Job", "tiny-prepare")) or {})
    assert not other
    driver.tick()
    driver.kube.objs[("Job", "tiny-prepare")] = {"metadata": {"name": "tiny-prepare",
                                                              "ownerReferences": [{"uid": "someone-else"}]}}
    with pytest.raises(AdoptionConflict):
        driver.tick()


def test_pending_emits_the_compiler_notes_as_events(driver: Driver) -> None:
    # The tiny preset warms up for 5 steps; a 10-step run with no warmup of its own gets 2, and an event says why.
    t = driver.run.spec.training
    training = replace(t, max_steps=10, optimizer=replace(t.optimizer, warmup_steps=None))
    driver.run = replace(driver.run, spec=replace(driver.run.spec, training=training))
    assert driver.tick() == "Preparing"
    notes = [e for e in driver.events if e.startswith("PresetAdjusted: ")]
    assert notes == ["PresetAdjusted: spec.training.optimizer.warmupSteps: 2 instead of the preset's 5, because the "
                     "run has 10 steps (maxSteps=10) and a preset's warmup takes at most 20% of them; write "
                     "warmupSteps to choose another"]
