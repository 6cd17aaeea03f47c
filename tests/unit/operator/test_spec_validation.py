"""Offline validation of TrainingRun specs: every rejection names the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from kiln_api.specfields import SpecError
from kiln_api.trainingrun import parse_spec, progress_patch, spec_dict
from kiln_op_testlib import load_example


def _tiny() -> dict[str, Any]:
    raw = copy.deepcopy(load_example("tiny.yaml")["spec"])
    raw["training"]["precision"] = "bf16"  # the example trains in fp32; bf16 makes the ZeRO rule reachable
    return raw


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        for p in parents:
            raw = raw.setdefault(p, {})
        raw[leaf] = value
    return edit


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("zero nodes", _set("training.nodes", 0), "spec.training.nodes"),
    ("negative nodes", _set("training.nodes", -2), "spec.training.nodes"),
    ("unknown preset", _set("model.preset", "gpt_9000"), "spec.model.preset"),
    ("zero stage 4", _set("training.zero", {"stage": 4}), "spec.training.zero.stage"),
    ("param offload without stage 3", _set("training.zero", {"stage": 2, "offloadParams": True}),
     "spec.training.zero.offloadParams"),
    ("malformed S3 URI", _set("storage.uri", "s3:/kiln"), "spec.storage.uri"),
    ("not S3", _set("storage.uri", "gs://kiln/x"), "spec.storage.uri"),
    ("inline credentials", _set("storage.secretAccessKey", "hunter2"), "spec.storage.secretAccessKey"),
    ("secret in another namespace", _set("storage.secretRef.namespace", "other"),
     "spec.storage.secretRef.namespace"),
    ("two budgets", _set("training.maxTokens", 1000), "spec.training.maxSteps"),
    ("batch not divisible", _set("training.globalBatchSize", 6), "spec.training.globalBatchSize"),
    ("custom without shape", _set("model.preset", "custom"), "spec.model.custom"),
    ("wrong type", _set("training.nodes", "two"), "spec.training.nodes"),
    ("no sources", _set("data.sources", []), "spec.data.sources"),
    # cross-field rules declared on the trainer's types, projected onto the spec (kiln_api.rules)
    ("zero learning rate", _set("training.optimizer.lr", 0.0), "spec.training.optimizer.lr"),
    ("beta of one", _set("training.optimizer.beta2", 1.0), "spec.training.optimizer.beta2"),
    ("warmup as long as the run", _set("training.optimizer.warmupSteps", 400), "spec.training.optimizer.warmupSteps"),
    ("bf16 without ZeRO", _set("training.zero", {"stage": 0}), "spec.training.precision"),
    ("kv heads not dividing heads", _set("model", {"preset": "custom", "custom": {
        "layers": 2, "hidden": 64, "heads": 4, "kvHeads": 3}}), "spec.model.custom.kvHeads"),
    ("odd head size", _set("model", {"preset": "custom", "custom": {"layers": 2, "hidden": 60, "heads": 4}}),
     "spec.model.custom.heads"),
    ("hidden not divisible by heads", _set("model", {"preset": "custom", "custom": {
        "layers": 2, "hidden": 64, "heads": 3}}), "spec.model.custom.heads"),
    ("more ranks than GPUs", lambda raw: raw["training"].update(gpusPerNode=2, accelerator="nvidia-l4", globalBatchSize=64,
                                                                processesPerNode=4), "spec.training.processesPerNode"),
    ("GPUs named cpu", _set("training.gpusPerNode", 1), "spec.training.accelerator"),
    ("max units below min units", _set("data.cleaning", {"minUnits": 10, "maxUnits": 5}),
     "spec.data.cleaning.maxUnits"),
    ("distillation without a teacher", _set("model.objective", "distillation"), "spec.training.distillation"),
]


@pytest.mark.parametrize(("what", "edit", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_spec_names_the_field(what: str, edit: Callable[[dict[str, Any]], None], field: str) -> None:
    raw = _tiny()
    edit(raw)
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert str(err.value).startswith(field + ":"), str(err.value)


def test_defaults_are_filled_and_round_trip() -> None:
    spec = parse_spec(_tiny())
    assert spec.launcher == "Auto" and spec.training.checkpoint.keep == 2
    assert parse_spec(spec_dict(spec)) == spec


def test_progress_patch_maps_the_trainer_record() -> None:
    body = progress_patch({"step": 10, "tokens": 5120, "loss": 3.5, "tokens_per_s": 900.0,
                           "eta_seconds": 12.0, "last_committed_step": 0})
    assert body == {"status": {"progress": {"step": 10, "tokens": 5120, "loss": 3.5, "tokensPerSecond": 900.0,
                                            "etaSeconds": 12.0, "lastCommittedStep": 0}}}
    with pytest.raises(SpecError, match="progress.lr"):
        progress_patch({"lr": 1.0})
    with pytest.raises(SpecError, match="status.progress.step"):
        progress_patch({"step": "ten"})
