"""The kopf timer handler on an in-memory API: several phases per tick, bad specs, terminal runs."""

from __future__ import annotations

import copy
import logging
from typing import Any

import kopf
import pytest
from kiln_op_testlib import FakeKube, load_example
from kiln_operator import handlers


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeKube, list[tuple[str, str]]]:
    kube = FakeKube()
    handlers.set_kube(kube)  # type: ignore[arg-type]
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(kopf, "event", lambda body, *, type, reason, message: posted.append((reason, message)))
    return kube, posted


def _call(spec: dict[str, Any], status: dict[str, Any]) -> kopf.Patch:
    patch = kopf.Patch()
    body = {"apiVersion": "kiln.dev/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": "tiny", "namespace": "team-a", "uid": "u1", "generation": 2},
            "spec": spec, "status": status}
    handlers.reconcile(body=body, spec=spec, status=status, meta=body["metadata"], patch=patch,  # type: ignore[arg-type]
                       name="tiny", namespace="team-a", uid="u1", logger=logging.getLogger("test"))
    return patch


def test_new_run_gets_its_first_job_in_one_tick(fake: tuple[FakeKube, list[tuple[str, str]]]) -> None:
    kube, posted = fake
    patch = _call(load_example("tiny.yaml")["spec"], {})
    assert patch.status["phase"] == "Preparing"
    assert patch.status["observedGeneration"] == 2
    assert ("Job", "tiny-prepare") in kube.objs and ("ConfigMap", "tiny-config") in kube.objs
    assert [r for r, _ in posted].count("PreflightPassed") == 1


def test_prepared_data_moves_on_to_the_training_job(fake: tuple[FakeKube, list[tuple[str, str]]]) -> None:
    kube, _ = fake
    spec = load_example("tiny.yaml")["spec"]
    first = _call(spec, {})
    kube.finish("Job", "tiny-prepare", "Complete")
    second = _call(spec, dict(first.status))
    assert second.status["phase"] == "Training"
    assert ("PyTorchJob", "tiny-train") in kube.objs, "Training's first step ran in the same tick"


def test_invalid_spec_fails_with_the_field(fake: tuple[FakeKube, list[tuple[str, str]]]) -> None:
    spec = copy.deepcopy(load_example("tiny.yaml")["spec"])
    spec["training"]["nodes"] = 0  # what an old CRD without the minimum would let through
    with pytest.raises(kopf.PermanentError, match="spec.training.nodes"):
        _call(spec, {})


def test_terminal_runs_are_left_alone(fake: tuple[FakeKube, list[tuple[str, str]]]) -> None:
    kube, posted = fake
    patch = _call(load_example("tiny.yaml")["spec"], {"phase": "Succeeded"})
    assert not patch and not kube.objs and not posted
