"""Every way a run can fail or get stuck ends in a condition with a specific reason and the real cause.

The kopf timer handler on an in-memory API (FakeKube): first-reconcile conditions, a preflight that
raises, referenced runs missing or failed, a failed Job's own error, children the API refuses, pods
that cannot start, names that cannot carry their children, and edits of finished runs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import kopf
import pytest
from kiln_api.childnames import max_run_name_length
from kiln_op_testlib import FakeKube, load_example
from kiln_operator import handlers, phases
from kubernetes.client.exceptions import ApiException

Events = list[tuple[str, str]]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeKube, Events]:
    kube = FakeKube()
    handlers.set_kube(kube)  # type: ignore[arg-type]
    posted: Events = []
    monkeypatch.setattr(kopf, "event", lambda body, *, type, reason, message: posted.append((reason, message)))
    return kube, posted


def reconcile(spec: dict[str, Any], status: dict[str, Any], name: str = "tiny", generation: int = 1) -> dict[str, Any]:
    """One timer tick; returns the status as it is after the patch (kopf applies it even on errors)."""
    patch = kopf.Patch()
    meta = {"name": name, "namespace": "team-a", "uid": "u1", "generation": generation}
    body = {"apiVersion": "kiln.dev/v1alpha1", "kind": "TrainingRun", "metadata": meta, "spec": spec,
            "status": status}
    try:
        handlers.reconcile(body=body, spec=spec, status=status, meta=meta, patch=patch,  # type: ignore[arg-type]
                           name=name, namespace="team-a", uid="u1", logger=logging.getLogger("test"))
    except kopf.PermanentError:
        pass
    return {**status, **dict(patch.status)}


def cond(status: dict[str, Any], ctype: str) -> tuple[str, str, str]:
    c = next(c for c in status["conditions"] if c["type"] == ctype)
    return c["status"], c["reason"], c["message"]


def tiny() -> dict[str, Any]:
    return load_example("tiny.yaml")["spec"]


def test_first_reconcile_reports_in_progress(fake: tuple[FakeKube, Events]) -> None:
    status = reconcile(tiny(), {})
    assert status["phase"] == "Preparing" and status["observedGeneration"] == 1
    assert cond(status, "Reconciling")[0] == "True"
    assert cond(status, "Ready")[0] == "False" and cond(status, "Stalled")[0] == "False"


def test_a_preflight_that_raises_fails_the_run_with_the_cause(fake: tuple[FakeKube, Events],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(spec: Any) -> Any:
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(phases, "estimate", broken)
    status = reconcile(tiny(), {})
    assert status["phase"] == "Failed"
    stalled, reason, message = cond(status, "Stalled")
    assert (stalled, reason) == ("True", "PreflightError") and "ZeroDivisionError" in message


@pytest.mark.parametrize(("edit", "reason", "field"), [
    ({"model": {"preset": "tiny_cpu", "initFrom": {"run": "base"}}}, "InitFromNotFound", "spec.model.initFrom.run"),
    ({"model": {"preset": "tiny_cpu", "objective": "distillation"},
      "training": {"maxSteps": 10, "distillation": {"teacherRun": "base"}}}, "TeacherNotFound",
     "spec.training.distillation.teacherRun"),
])
def test_missing_referenced_run_holds_before_any_pod(fake: tuple[FakeKube, Events], edit: dict[str, Any],
                                                     reason: str, field: str) -> None:
    kube, posted = fake
    spec = {**tiny(), **edit}
    status = reconcile(spec, {})
    assert status["phase"] == "Pending"
    stalled, got, message = cond(status, "Stalled")
    assert (stalled, got) == ("True", reason) and field in message and "team-a/base" in message
    assert not [k for k in kube.objs if k[0] == "Job"], "no pod may start before its references exist"
    assert (reason, message) in posted
    kube.objs[("TrainingRun", "base")] = {"metadata": {"name": "base"}, "status": {"phase": "Succeeded"}}
    status = reconcile(spec, status)
    assert status["phase"] == "Preparing" and cond(status, "Stalled")[0] == "False"


def test_failed_referenced_run_fails_the_run(fake: tuple[FakeKube, Events]) -> None:
    kube, _ = fake
    kube.objs[("TrainingRun", "base")] = {"metadata": {"name": "base"}, "status": {"phase": "Failed"}}
    status = reconcile({**tiny(), "model": {"preset": "tiny_cpu", "initFrom": {"run": "base"}}}, {})
    assert status["phase"] == "Failed" and cond(status, "Stalled")[1] == "InitFromFailed"


def _failed_pod(name: str, code: int, message: str = "") -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"phase": "Failed", "containerStatuses": [
        {"state": {"terminated": {"exitCode": code, "message": message}}}]}}


def test_a_failed_job_reports_the_trainers_own_error(fake: tuple[FakeKube, Events]) -> None:
    kube, _ = fake
    status = reconcile(tiny(), {})
    kube.finish("Job", "tiny-prepare", "Failed")
    kube.logs["tiny-prepare-x1"] = ("Traceback (most recent call last):\n  ...\nkiln-trainer prepare: error: "
                                    "tokenizer.vocab_size: 512 is too small for the 548 characters of the corpus\n")
    kube.pods = [_failed_pod("tiny-prepare-x1", 78)]
    status = reconcile(tiny(), status)
    assert status["phase"] == "Failed"
    _, reason, message = cond(status, "Ready")
    assert reason == "InvalidConfig"
    assert message == ("pod tiny-prepare-x1 exited with 78: kiln-trainer prepare: error: tokenizer.vocab_size: "
                       "512 is too small for the 548 characters of the corpus")


def test_termination_message_wins_over_the_log(fake: tuple[FakeKube, Events]) -> None:
    kube, _ = fake
    status = reconcile(tiny(), {})
    kube.finish("Job", "tiny-prepare", "Failed")
    kube.pods = [_failed_pod("tiny-prepare-x1", 1, "S3 bucket 'kiln' does not exist")]
    status = reconcile(tiny(), status)
    assert cond(status, "Ready")[1:] == ("PrepareFailed", "pod tiny-prepare-x1 exited with 1: S3 bucket 'kiln' "
                                                          "does not exist")


class RefusingKube(FakeKube):
    """The API server refusing every Job with a given status and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__()
        self.code, self.message = code, message

    def create_or_adopt(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        if obj["kind"] == "Job":
            err = ApiException(status=self.code, reason="Refused")
            err.body = json.dumps({"kind": "Status", "message": self.message})
            raise err
        return super().create_or_adopt(obj)


def test_an_invalid_child_fails_the_run_with_the_api_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kopf, "event", lambda body, **_: None)
    handlers.set_kube(RefusingKube(422, 'Job.batch "tiny-prepare" is invalid: spec.template: bad'))  # type: ignore[arg-type]
    status = reconcile(tiny(), {})
    assert status["phase"] == "Failed"
    assert cond(status, "Stalled")[1] == "ChildRejected" and "spec.template: bad" in cond(status, "Stalled")[2]


def test_an_exceeded_quota_holds_the_run_with_the_api_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kopf, "event", lambda body, **_: None)
    handlers.set_kube(RefusingKube(403, 'jobs "tiny-prepare" is forbidden: exceeded quota: q, '  # type: ignore[arg-type]
                                        'requested: count/jobs.batch=1'))
    status = reconcile(tiny(), {})
    assert status["phase"] == "Preparing"
    stalled, reason, message = cond(status, "Stalled")
    assert (stalled, reason) == ("True", "QuotaExceeded") and "exceeded quota: q" in message
    assert cond(status, "Reconciling")[0] == "False", "kstatus reads Reconciling first: held is not reconciling"


def test_a_missing_secret_holds_the_run_until_it_exists(fake: tuple[FakeKube, Events]) -> None:
    kube, _ = fake
    status = reconcile(tiny(), {})
    kube.pods = [{"metadata": {"name": "tiny-prepare-x1"}, "status": {"containerStatuses": [{"state": {"waiting": {
        "reason": "CreateContainerConfigError", "message": 'secret "kiln-s3" not found'}}}]}}]
    status = reconcile(tiny(), status)
    assert status["phase"] == "Preparing"
    assert cond(status, "Stalled") == ("True", "SecretNotFound", 'pod tiny-prepare-x1: secret "kiln-s3" not found')
    kube.pods = [{"metadata": {"name": "tiny-prepare-x1"}, "status": {"containerStatuses": [
        {"state": {"running": {}}}]}}]
    status = reconcile(tiny(), status)
    assert cond(status, "Stalled")[0] == "False" and cond(status, "Reconciling")[0] == "True"


def test_a_name_that_cannot_carry_its_children_fails_at_once(fake: tuple[FakeKube, Events]) -> None:
    kube, _ = fake
    status = reconcile(tiny(), {}, name="r" * (max_run_name_length() + 1))
    assert status["phase"] == "Failed" and "metadata.name" in cond(status, "Stalled")[2]
    assert not kube.objs


def test_editing_a_finished_run_moves_observed_generation(fake: tuple[FakeKube, Events]) -> None:
    done = {"phase": "Succeeded", "observedGeneration": 3,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "observedGeneration": 3}]}
    status = reconcile(tiny(), done, generation=4)
    assert status["observedGeneration"] == 4 and status["conditions"][0]["observedGeneration"] == 4
