"""Kueue cooperation without a cluster: the builders' labels and suspend, Kueue's Workload read as the
run's Queued condition, and preemptions counted once each, as preemptions."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kiln_api.specfields import SpecError
from kiln_api.trainingrun import parse_spec
from kiln_op_testlib import FakeKube, load_example
from kiln_operator import phases, queueing
from kiln_operator.builders.common import Run
from kiln_operator.builders.indexed_job import build_indexed_job
from kiln_operator.builders.pytorchjob import build_pytorchjob

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PENDING_MSG = "couldn't assign flavors to pod set master: insufficient unused quota for cpu in flavor default, 1 more needed"


def _queued_run(tiny_run: Run, priority: str | None = None) -> Run:
    return replace(tiny_run, spec=replace(tiny_run.spec, serving=None, queue="team-a-queue", queue_priority=priority))


def _workload(job_uid: str, conditions: list[dict[str, Any]], preempted: int = 0, name: str = "wl-1") -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": conditions}
    if preempted:
        status["schedulingStats"] = {"evictions": [
            {"reason": "Preempted", "underlyingCause": "InClusterQueue", "count": preempted},
            {"reason": "PodsReadyTimeout", "underlyingCause": "", "count": 5},  # not a preemption
        ]}
    return {"metadata": {"name": name, "ownerReferences": [{"uid": job_uid}]}, "status": status}


def _cond(ctype: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message}


def test_queued_pytorchjob_is_labelled_and_suspended(tiny_run: Run) -> None:
    job = build_pytorchjob(_queued_run(tiny_run, priority="kiln-high"))
    labels = job["metadata"]["labels"]
    assert labels[queueing.QUEUE_LABEL] == "team-a-queue"
    assert labels[queueing.PRIORITY_LABEL] == "kiln-high"
    assert job["spec"]["runPolicy"]["suspend"] is True
    for replica in job["spec"]["pytorchReplicaSpecs"].values():  # pods are not Kueue's unit here
        assert queueing.QUEUE_LABEL not in replica["template"]["metadata"]["labels"]
    assert queueing.suspended(job)


def test_queued_indexed_job_is_suspended_and_unqueued_jobs_are_not(tiny_run: Run) -> None:
    job = build_indexed_job(_queued_run(tiny_run))
    assert job["spec"]["suspend"] is True and queueing.suspended(job)
    assert queueing.PRIORITY_LABEL not in job["metadata"]["labels"]
    plain = build_pytorchjob(tiny_run)
    assert "suspend" not in plain["spec"]["runPolicy"] and queueing.QUEUE_LABEL not in plain["metadata"]["labels"]
    assert "suspend" not in build_indexed_job(tiny_run)["spec"]


def test_queue_must_be_a_dns_label() -> None:
    raw = load_example("tiny.yaml")["spec"]
    with pytest.raises(SpecError, match="queue"):
        parse_spec({**raw, "queue": "Team_A"})
    assert parse_spec({**raw, "queue": "team-a"}).queue == "team-a"


def test_queue_state_reads_kueue_reasons() -> None:
    state = queueing.queue_state(None, "q")
    assert (state.admitted, state.reason, state.workload) == (False, "WorkloadPending", None)
    pending = _workload("u", [_cond("QuotaReserved", "False", "Pending", PENDING_MSG)])
    state = queueing.queue_state(pending, "q")
    assert (state.admitted, state.reason, state.message) == (False, "Pending", PENDING_MSG)
    admitted = _workload("u", [_cond("QuotaReserved", "True", "QuotaReserved"),
                               _cond("Admitted", "True", "Admitted", "The workload is admitted")])
    assert queueing.queue_state(admitted, "q").admitted
    evicted = _workload("u", [_cond("QuotaReserved", "False", "Pending", PENDING_MSG),
                              _cond("Evicted", "True", "Preempted", "Preempted to accommodate a higher priority")],
                        preempted=2)
    state = queueing.queue_state(evicted, "q")
    assert (state.admitted, state.reason, state.preemptions) == (False, "Preempted", 2)


def test_preemptions_are_counted_once_per_workload() -> None:
    state = queueing.QueueState(False, "Preempted", "", "wl-1", 2)
    assert queueing.new_preemptions(state, None) == 2
    assert queueing.new_preemptions(state, {"workload": "wl-1", "preemptions": 1}) == 1
    assert queueing.new_preemptions(state, {"workload": "wl-1", "preemptions": 2}) == 0
    assert queueing.new_preemptions(state, {"workload": "wl-0", "preemptions": 5}) == 2  # a recreated job


class KueueKube(FakeKube):
    """FakeKube with Kueue installed: Workloads listed by the job-uid label, pods as before."""

    def __init__(self, kueue: bool = True) -> None:
        super().__init__()
        self.workloads: list[dict[str, Any]] = []
        self.kueue = kueue

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        if kind != "Workload":
            return super().list(api_version, kind, namespace, selector)
        uid = selector.split("=", 1)[1]
        return [w for w in self.workloads if w["metadata"]["ownerReferences"][0]["uid"] == uid]

    def has_api(self, group_version: str, plural: str) -> bool:
        return self.kueue if group_version.startswith("kueue.") else super().has_api(group_version, plural)


class Driver:
    def __init__(self, run: Run, kube: KueueKube) -> None:
        self.run, self.kube, self.status, self.now = run, kube, {"phase": "Pending"}, T0
        self.events: list[str] = []
        self.hold: tuple[str, str] | None = None

    def tick(self) -> str:
        self.now += timedelta(seconds=5)
        ctx = phases.Ctx(self.kube, self.run, copy.deepcopy(self.status), self.now)  # type: ignore[arg-type]
        step = {"Pending": phases.step_pending, "Preparing": phases.step_preparing,
                "Training": phases.step_training, "Exporting": phases.step_exporting}[self.status["phase"]]
        t = step(ctx)
        self.status.update(ctx.status_patch)
        self.events += [f"{r}: {m}" for _, r, m in ctx.events]
        self.hold = ctx.hold
        if t is not None:
            self.status["phase"] = t.to
        return str(self.status["phase"])

    def queued(self) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == "Queued")

    def job(self) -> dict[str, Any]:
        return self.kube.objs[("PyTorchJob", "tiny-train")]


def _to_queued_training(d: Driver) -> dict[str, Any]:
    d.tick()
    d.tick()
    d.kube.finish("Job", "tiny-prepare", "Complete")
    assert d.tick() == "Training"
    assert d.tick() == "Training"  # creates the job, suspended; Kueue has made no Workload yet
    assert d.queued()["reason"] == "WorkloadPending" or d.hold is not None
    job = d.job()
    job["metadata"]["uid"] = "job-uid-1"
    return job


def test_run_is_queued_with_kueues_reason_then_trains_and_counts_preemption(tiny_run: Run) -> None:
    d = Driver(_queued_run(tiny_run), KueueKube())
    job = _to_queued_training(d)
    d.kube.workloads = [_workload("job-uid-1", [_cond("QuotaReserved", "False", "Pending", PENDING_MSG)])]
    for _ in range(3):
        assert d.tick() == "Training"
    assert (d.queued()["status"], d.queued()["reason"], d.queued()["message"]) == ("True", "Pending", PENDING_MSG)
    assert PENDING_MSG in d.status["message"]
    assert d.status["gpuHours"] == 0.0, "waiting for quota uses no device-hours"

    job["spec"]["runPolicy"]["suspend"] = False  # Kueue admits and unsuspends
    d.kube.workloads = [_workload("job-uid-1", [_cond("Admitted", "True", "Admitted", "admitted")])]
    d.tick()
    assert (d.queued()["status"], d.queued()["reason"]) == ("False", "Admitted")
    d.tick()
    assert d.status["gpuHours"] > 0

    job["spec"]["runPolicy"]["suspend"] = True  # Kueue preempts: suspended again, Workload evicted
    d.kube.workloads = [_workload("job-uid-1", [_cond("Evicted", "True", "Preempted", "to fit kiln-high")],
                                  preempted=1)]
    for _ in range(3):
        assert d.tick() == "Training"
    assert d.status["restarts"] == {"failure": 0, "preemption": 1}, "counted once, as a preemption"
    assert (d.queued()["status"], d.queued()["reason"]) == ("True", "Preempted")
    assert sum("after preemption" in e for e in d.events) == 1

    job["spec"]["runPolicy"]["suspend"] = False  # readmitted: the same job resumes from its checkpoint
    d.kube.workloads = [_workload("job-uid-1", [_cond("Admitted", "True", "Admitted", "")], preempted=1)]
    d.tick()
    d.kube.finish("PyTorchJob", "tiny-train", "Succeeded")
    assert d.tick() == "Exporting"
    assert d.status["restarts"]["preemption"] == 1


def test_preemptions_over_budget_fail_the_run(tiny_run: Run) -> None:
    run = _queued_run(tiny_run)
    run = replace(run, spec=replace(run.spec, training=replace(run.spec.training, max_preemptions=1)))
    d = Driver(run, KueueKube())
    job = _to_queued_training(d)
    job["spec"]["runPolicy"]["suspend"] = True
    d.kube.workloads = [_workload("job-uid-1", [_cond("Evicted", "True", "Preempted", "")], preempted=2)]
    assert d.tick() == "Failed"


def test_queue_without_kueue_holds_the_run_with_the_cause(tiny_run: Run) -> None:
    d = Driver(_queued_run(tiny_run), KueueKube(kueue=False))
    _to_queued_training(d)
    assert d.tick() == "Training"
    assert d.hold is not None and d.hold[0] == "KueueUnavailable"
    assert d.queued()["reason"] == "KueueUnavailable"
