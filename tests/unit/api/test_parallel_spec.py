"""spec.training.parallelism: the declared rules refuse bad layouts by field, the compiler carries the
layout into train.yaml, and the preflight divides model state by pipeline × tensor and charges the bubble."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kiln_api.compiler import RunIdentity, compile_run
from kiln_api.estimate import bubble_fraction, estimate
from kiln_api.specfields import SpecError
from kiln_api.train_config import ParallelConfig, ParallelShape
from kiln_api.trainingrun import parse_spec

ROOT = Path(__file__).resolve().parents[3]
TINY = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())["spec"]


def _spec(parallelism: dict[str, int], **training: Any) -> dict[str, Any]:
    raw = copy.deepcopy(TINY)
    raw["training"].update({"nodes": 2, "processesPerNode": 2, "parallelism": parallelism, **training})
    return raw


def _compile(raw: dict[str, Any]) -> Any:
    return compile_run(parse_spec(raw), RunIdentity("r", "ns"))


@pytest.mark.parametrize("layout", [{"pipeline": 2}, {"tensor": 2}])
def test_a_two_by_two_layout_compiles_with_the_batch_over_data_parallel_only(layout: dict[str, int]) -> None:
    compiled = _compile(_spec(layout, microBatchSize=4, globalBatchSize=8))
    assert compiled.world_size == 4
    assert compiled.raw["train.yaml"]["parallel"] == {"pipeline": 1, "tensor": 1, **layout}
    # 8 = 4 × accumulation × 2 replicas: one micro-batch per step per replica, not 8 % (4 × 4) != 0.
    assert compiled.train.check_world(4) == 1


@pytest.mark.parametrize(("raw", "field"), [
    (_spec({"pipeline": 3}), "spec.training.parallelism"),                      # 4 ranks / 3 stages
    (_spec({"pipeline": 2, "tensor": 2}), "spec.training.parallelism.tensor"),  # both at once
    (_spec({"tensor": 2}, distillation={"teacherRun": "t"}), "spec.training.parallelism.pipeline"),
])
def test_admission_names_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert e.value.path == field, str(e.value)


def test_custom_shape_needs_heads_divisible_and_enough_layers() -> None:
    raw = _spec({"tensor": 2})
    raw["model"] = {"preset": "custom", "custom": {"layers": 2, "hidden": 96, "heads": 6, "kvHeads": 3, "seqLen": 64}}
    with pytest.raises(SpecError, match="kvHeads=3 is not divisible"):
        parse_spec(raw)
    raw["model"]["custom"].update(layers=1, heads=4, kvHeads=2, hidden=64)
    raw["training"]["parallelism"] = {"pipeline": 2}
    with pytest.raises(SpecError, match="layers, got model.custom.layers=1") as e:
        parse_spec(raw)
    assert e.value.path == "spec.training.parallelism.pipeline"


def test_a_preset_shape_is_checked_by_the_compiler_with_the_spec_field() -> None:
    # tiny_cpu has 4 heads: 8 tensor ranks cannot split them; only the compiler knows the preset's shape.
    raw = _spec({"tensor": 8}, nodes=8, processesPerNode=1, globalBatchSize=8, microBatchSize=8)
    with pytest.raises(SpecError) as e:
        _compile(raw)
    assert e.value.path == "spec.training.parallelism.tensor" and "n_heads=4" in str(e.value)


def test_world_shape_splits_or_names_the_rule() -> None:
    assert ParallelShape(8, 2, 2).data_parallel() == 2
    with pytest.raises(SpecError, match="do not split"):
        ParallelShape(6, 4, 1).data_parallel()
    with pytest.raises(SpecError, match="not supported yet"):
        ParallelConfig(pipeline=2, tensor=2)


def test_estimate_divides_model_state_and_charges_the_bubble() -> None:
    dp = estimate(parse_spec(_spec({}, microBatchSize=1, globalBatchSize=8, zero={"stage": 0})))
    pp = estimate(parse_spec(_spec({"pipeline": 2}, microBatchSize=1, globalBatchSize=8, zero={"stage": 0})))
    tp = estimate(parse_spec(_spec({"tensor": 2}, microBatchSize=1, globalBatchSize=8, zero={"stage": 0})))
    assert pp.memory.params == -(-dp.memory.params // 2) and tp.memory.params == pp.memory.params
    assert tp.memory.activations < dp.memory.activations == pp.memory.activations
    # 2 replicas × micro 1 → 4 micro-batches per step through 2 stages: bubble 1 / (4 + 1).
    assert pp.bubble == pytest.approx(0.2) and dp.bubble == 0.0 == tp.bubble
    assert pp.hours == pytest.approx(dp.hours / 0.8)
    assert bubble_fraction(parse_spec(_spec({"pipeline": 4}, microBatchSize=1, globalBatchSize=8)).training) == \
        pytest.approx(3 / 11)
