"""Prepare, export and gate Jobs carry deadlines; a pod that never starts holds the run as Stalled with
the pod's reason, and a Job past its deadline fails the run with Kubernetes' DeadlineExceeded."""

from __future__ import annotations

from typing import Any

import pytest
from kiln_op_testlib import ROOT, FakeKube
from kiln_operator import children
from kiln_operator.builders import export_job, prepare_job
from kiln_operator.builders.common import Run
from kiln_operator.serving import builders as serving_builders
from test_failure_reasons import Events, cond, fake, reconcile, tiny  # noqa: F401 - fake is a fixture


def test_every_step_job_has_a_deadline(tiny_run: Run) -> None:
    assert prepare_job.build_prepare_job(tiny_run)["spec"]["activeDeadlineSeconds"] == prepare_job.DEADLINE_S
    assert export_job.build_export_job(tiny_run)["spec"]["activeDeadlineSeconds"] == export_job.DEADLINE_S
    # The gate Job's builder needs a serving target; its golden file (tests/unit/serving) pins it.
    gate = (ROOT / "tests" / "unit" / "serving" / "golden" / "gate-job.yaml").read_text()
    assert f"activeDeadlineSeconds: {serving_builders.GATE_DEADLINE_S}" in gate


def _waiting(reason: str, message: str) -> dict[str, Any]:
    return {"metadata": {"name": "tiny-prepare-x1"},
            "status": {"containerStatuses": [{"state": {"waiting": {"reason": reason, "message": message}}}]}}


UNSCHEDULABLE = {"metadata": {"name": "tiny-prepare-x1"}, "status": {"phase": "Pending", "conditions": [
    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
     "message": "0/2 nodes are available: 2 Insufficient memory."}]}}


@pytest.mark.parametrize(("pod", "reason", "needle"), [
    (_waiting("ImagePullBackOff", 'Back-off pulling image "kiln/trainer:nope"'), "ImagePullFailed", "kiln/trainer:nope"),
    (_waiting("CreateContainerConfigError", 'configmap "x" not found'), "ContainerConfigError", 'configmap "x"'),
    (UNSCHEDULABLE, "Unschedulable", "Insufficient memory"),
])
def test_a_pod_that_never_starts_stalls_the_run_with_its_reason(fake: tuple[FakeKube, Events],  # noqa: F811
                                                                pod: dict[str, Any], reason: str, needle: str) -> None:
    kube, _ = fake
    status = reconcile(tiny(), {})
    kube.pods = [pod]
    status = reconcile(tiny(), status)
    stalled, got, message = cond(status, "Stalled")
    assert (status["phase"], stalled, got) == ("Preparing", "True", reason)
    assert message.startswith("pod tiny-prepare-x1: ") and needle in message


def test_a_job_past_its_deadline_fails_the_run_naming_it(fake: tuple[FakeKube, Events]) -> None:  # noqa: F811
    kube, _ = fake
    status = reconcile(tiny(), {})
    kube.objs[("Job", "tiny-prepare")]["status"] = {"conditions": [{
        "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
        "message": "Job was active longer than specified deadline"}]}
    status = reconcile(tiny(), status)
    assert status["phase"] == "Failed"
    _, reason, message = cond(status, "Ready")
    assert reason == "PrepareFailed" and "DeadlineExceeded" in message, (reason, message)


def test_scheduled_pods_do_not_stall() -> None:
    ok = {"metadata": {"name": "p"}, "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}
    assert children.blocked([ok]) is None


def test_a_pod_the_api_server_refused_stalls_the_run_with_the_controllers_message(
        fake: tuple[FakeKube, Events]) -> None:  # noqa: F811
    """No pod exists to carry a status (Pod Security refused it): the Job controller's FailedCreate says why."""
    kube, _ = fake
    status = reconcile(tiny(), {})
    refusal = 'pods "tiny-prepare-x1" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false'
    kube.events = [  # type: ignore[attr-defined]
        {"reason": "SuccessfulCreate", "type": "Normal", "involvedObject": {"kind": "Job", "name": "tiny-prepare"}},
        {"reason": "FailedCreate", "type": "Warning", "message": f"Error creating: {refusal}",
         "lastTimestamp": "2026-12-08T02:17:20Z", "involvedObject": {"kind": "Job", "name": "tiny-prepare"}},
    ]
    status = reconcile(tiny(), status)
    stalled, got, message = cond(status, "Stalled")
    assert (status["phase"], stalled, got) == ("Preparing", "True", "PodCreateRefused")
    assert message.startswith("Job tiny-prepare: ") and "PodSecurity" in message


def test_events_of_other_kinds_of_trouble_are_no_refusal() -> None:
    events = [{"reason": "BackoffLimitExceeded", "type": "Warning", "involvedObject": {"kind": "Job", "name": "j"}}]
    assert children.refused(events) is None
