"""The kopf timer handler on an in-memory API: several phases per tick, bad specs, terminal runs, spec edits."""

from __future__ import annotations

import copy
import logging
from typing import Any

import kopf
import pytest
import yaml
from kiln_op_testlib import FakeKube, load_example
from kiln_operator import handlers


class PatchableKube(FakeKube):
    """FakeKube plus the merge patch apply_spec_change writes the ConfigMap with."""

    def patch(self, api_version: str, kind: str, namespace: str, name: str, body: dict[str, Any]) -> Any:
        obj = self.objs[(kind, name)]
        obj["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
        obj["data"] = {**obj.get("data", {}), **body["data"]}
        return obj


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeKube, list[tuple[str, str]]]:
    kube = PatchableKube()
    handlers.set_kube(kube)  # type: ignore[arg-type]
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(kopf, "event", lambda body, *, type, reason, message: posted.append((reason, message)))
    return kube, posted


def _call(spec: dict[str, Any], status: dict[str, Any], generation: int = 2) -> kopf.Patch:
    patch = kopf.Patch()
    body = {"apiVersion": "kiln.dev/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": "tiny", "namespace": "team-a", "uid": "u1", "generation": generation},
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


def test_terminal_runs_are_left_alone_but_observe_the_generation(fake: tuple[FakeKube, list[tuple[str, str]]]) -> None:
    kube, posted = fake
    patch = _call(load_example("tiny.yaml")["spec"], {"phase": "Succeeded", "observedGeneration": 1})
    assert dict(patch) == {"status": {"observedGeneration": 2}}, "an edit of a finished run is still seen"
    assert not kube.objs and not posted
    again = _call(load_example("tiny.yaml")["spec"], {"phase": "Failed", "observedGeneration": 2})
    assert not again, "nothing to write once the generation is recorded"


def _training(kube: FakeKube, spec: dict[str, Any]) -> dict[str, Any]:
    """Drive a run to Training at generation 2; returns its status."""
    first = _call(spec, {})
    kube.finish("Job", "tiny-prepare", "Complete")
    status = {**first.status, **_call(spec, dict(first.status)).status}
    assert status["phase"] == "Training" and ("PyTorchJob", "tiny-train") in kube.objs
    return status


def _train_yaml(kube: FakeKube) -> dict[str, Any]:
    return yaml.safe_load(kube.objs[("ConfigMap", "tiny-config")]["data"]["train.yaml"])


def test_applied_edit_recompiles_and_restarts_the_gang(fake: tuple[FakeKube, list[tuple[str, str]]]) -> None:
    kube, posted = fake
    spec = load_example("tiny.yaml")["spec"]
    status = _training(kube, spec)
    edited = copy.deepcopy(spec)
    edited["training"]["optimizer"]["lr"] = 0.001
    edited["training"]["maxSteps"] = 800
    patch = _call(edited, status, generation=3)
    train = _train_yaml(kube)
    assert (train["optim"]["lr"], train["schedule"]["max_steps"]) == (0.001, 800)
    assert "deletionTimestamp" in kube.objs[("PyTorchJob", "tiny-train")]["metadata"], "gang restarted"
    assert [m for r, m in posted if r == "SpecChanged"] == [
        "spec edit applied: configuration recompiled; training gang restarting from the last committed checkpoint"]
    assert patch.status["observedGeneration"] == 3
    assert "restarts" not in patch.status, "an edit is not a failure"
    kube.gc()  # the old gang is gone: the next tick starts the new one on the new config
    posted.clear()
    _call(edited, {**status, **patch.status}, generation=3)
    assert ("PyTorchJob", "tiny-train") in kube.objs and "SpecChanged" not in [r for r, _ in posted]


def test_edit_outside_the_pods_changes_nothing_running(fake: tuple[FakeKube, list[tuple[str, str]]]) -> None:
    kube, posted = fake
    spec = load_example("tiny.yaml")["spec"]
    status = _training(kube, spec)
    before = copy.deepcopy(kube.objs[("ConfigMap", "tiny-config")])
    edited = copy.deepcopy(spec)
    edited["training"]["maxRestarts"] = 7  # read by the operator only
    _call(edited, status, generation=3)
    assert kube.objs[("ConfigMap", "tiny-config")] == before
    edited["serving"]["gatePrompts"] = ["Once upon a time"]  # export.yaml only: training goes on
    _call(edited, status, generation=4)
    assert "Once upon a time" in kube.objs[("ConfigMap", "tiny-config")]["data"]["export.yaml"]
    assert "deletionTimestamp" not in kube.objs[("PyTorchJob", "tiny-train")]["metadata"]
    assert [m for r, m in posted if r == "SpecChanged"] == ["spec edit applied: configuration recompiled"]


def test_edit_breaking_a_preset_rule_is_rejected_and_the_run_goes_on(
        fake: tuple[FakeKube, list[tuple[str, str]]]) -> None:
    kube, posted = fake
    spec = copy.deepcopy(load_example("tiny.yaml")["spec"])
    del spec["training"]["zero"]  # the preset's ZeRO stage 0
    status = _training(kube, spec)
    before = copy.deepcopy(kube.objs[("ConfigMap", "tiny-config")])
    spec["training"]["precision"] = "bf16"  # needs ZeRO >= 1: only the compiler knows the preset's stage
    _call(spec, status, generation=3)
    assert kube.objs[("ConfigMap", "tiny-config")] == before
    assert "deletionTimestamp" not in kube.objs[("PyTorchJob", "tiny-train")]["metadata"]
    rejected = [m for r, m in posted if r == "SpecRejected"]
    assert rejected and rejected[0].startswith("spec.training.precision: ")


def test_preset_rule_fails_a_new_run_at_pending_with_the_field(fake: tuple[FakeKube, list[tuple[str, str]]]) -> None:
    kube, posted = fake
    spec = copy.deepcopy(load_example("tiny.yaml")["spec"])
    for key in ("microBatchSize", "globalBatchSize"):
        del spec["training"][key]  # tiny_cpu's own batch: 8 sequences in micro-batches of 4
    spec["training"]["processesPerNode"] = 4  # 2 pods × 4 ranks: 8 is no multiple of 4 × 8
    patch = _call(spec, {})
    assert patch.status["phase"] == "Failed"
    assert patch.status["message"].startswith("spec.training.globalBatchSize: globalBatchSize=8 is not a multiple")
    assert ("ConfigMap", "tiny-config") not in kube.objs and ("InvalidSpec" in [r for r, _ in posted])
