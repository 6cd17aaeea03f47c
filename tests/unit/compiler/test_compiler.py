"""compile_run: the preset is the base, what the user wrote overrides it, one table maps the fields."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from compilekit import WHO, compile_dict, spec_dict
from kiln_api.compiler import PRESET_FIELDS, WARMUP_MAX_SHARE, compile_run, resolve_spec
from kiln_api.specfields import SpecError, camel
from kiln_api.train_presets import WARMUP_STEPS, gpt_7b
from kiln_api.trainingrun import parse_spec
from kiln_trainer.train.ds_config import deepspeed_config


def test_gpt_7b_trains_with_its_preset_not_the_crd_defaults() -> None:
    run = compile_dict(spec_dict("gpt_7b", "2x8gpu"))
    t, preset = run.train, gpt_7b()
    assert t.zero.stage == 3 and t.model.activation_checkpointing
    assert (t.batch.global_batch_size, t.batch.micro_batch_size, t.batch.seq_len) == (512, 1, 4096)
    assert t.precision.bf16 and t.optim.lr == preset.optim.lr
    assert t.model == preset.model
    ds = deepspeed_config(t, run.world_size)
    assert ds["zero_optimization"]["stage"] == 3 and "activation_checkpointing" in ds
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == \
        (512, 1, 32)


def test_what_the_user_wrote_overrides_the_preset() -> None:
    raw = spec_dict("gpt_7b", "2x8gpu", microBatchSize=2, globalBatchSize=256, activationCheckpointing=False,
                    zero={"stage": 2}, optimizer={"lr": 1e-4}, precision="fp16")
    t = compile_dict(raw).train
    assert (t.batch.micro_batch_size, t.batch.global_batch_size, t.zero.stage) == (2, 256, 2)
    assert not t.model.activation_checkpointing and t.optim.lr == 1e-4
    assert t.precision.fp16 and not t.precision.bf16
    assert t.optim.weight_decay == gpt_7b().optim.weight_decay, "unwritten fields still come from the preset"


@pytest.mark.parametrize(("spec_path", "cfg_path"), PRESET_FIELDS)
def test_every_preset_field_is_filled_and_overridable(spec_path: str, cfg_path: str) -> None:
    """Each row of the table works both ways: unset → the preset's value; set → the user's value."""
    raw = spec_dict("gpt_1b", "1gpu")
    base = compile_dict(raw)
    preset_value = _get(base.train, cfg_path)
    assert _get(base.spec, spec_path) == preset_value
    user_value = _other_value(spec_path, preset_value)
    assert user_value != preset_value or spec_path.endswith("offload_params")  # that one needs stage 3 too
    _put(raw, spec_path, user_value)
    assert _get(compile_dict(raw).train, cfg_path) == user_value


def test_preset_warmup_is_the_seed_s_where_the_budget_allows() -> None:
    steps = int(WARMUP_STEPS / WARMUP_MAX_SHARE)  # 25,000: just long enough for the preset's warmup
    run = compile_dict(spec_dict("gpt_125m", "1gpu", maxTokens=steps * 256 * 2048))
    assert run.train.schedule.warmup_steps == WARMUP_STEPS and run.notes == ()
    assert 50_000 <= run.train.model.vocab_size <= 100_000 and run.prepare.data.tokenizer.vocab_size == \
        run.train.model.vocab_size


def test_a_short_run_shortens_the_preset_warmup_and_says_why() -> None:
    raw = spec_dict("gpt_125m", "1gpu", maxSteps=1000)
    del raw["training"]["maxTokens"]
    run = compile_dict(raw)  # the CRD cannot know the preset's warmup; the compiler fits it to the run
    assert run.train.schedule.warmup_steps == 200 and run.spec.training.optimizer.warmup_steps == 200
    assert run.notes == ("spec.training.optimizer.warmupSteps: 200 instead of the preset's 5000, because the run "
                         "has 1000 steps (maxSteps=1000) and a preset's warmup takes at most 20% of them; write "
                         "warmupSteps to choose another",)
    raw["training"]["optimizer"] = {"warmupSteps": 600}  # the user's own value is kept, without a note
    run = compile_dict(raw)
    assert run.train.schedule.warmup_steps == 600 and run.notes == ()


def test_preset_rules_are_checked_on_the_resolved_spec() -> None:
    raw = spec_dict("gpt_125m", "1gpu", maxTokens=None, maxSteps=100, optimizer={"warmupSteps": 100})
    del raw["training"]["maxTokens"]
    with pytest.raises(SpecError, match=r"^spec.training.optimizer.warmupSteps: optimizer.warmupSteps=100 must "
                                        r"be fewer than maxSteps=100"):
        compile_run(parse_spec(raw), WHO)
    raw["training"]["zero"] = {"stage": 0}  # bf16 from the preset needs ZeRO >= 1
    raw["training"]["optimizer"] = {"warmupSteps": 10}
    with pytest.raises(SpecError, match=r"^spec.training.precision: needs zero.stage=0 >= 1"):
        compile_dict(raw)


def test_resolve_is_idempotent_and_leaves_the_input_alone() -> None:
    spec = parse_spec(spec_dict("gpt_1b", "cpu"))
    before = copy.deepcopy(spec)
    once = resolve_spec(spec)
    assert spec == before and resolve_spec(once) == once
    assert once.training.micro_batch_size == 8 and spec.training.micro_batch_size is None


def _get(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def _put(raw: dict[str, Any], spec_path: str, value: Any) -> None:
    *parents, leaf = [camel(p) for p in spec_path.split(".")]
    for p in parents:
        raw = raw.setdefault(p, {})
    raw[leaf] = value


def _other_value(spec_path: str, value: Any) -> Any:
    """A valid value different from the preset's for this field."""
    if isinstance(value, bool):
        # parameter offload needs stage 3, which gpt_1b (ZeRO-2) does not have
        return value if spec_path.endswith("offload_params") else not value
    if spec_path.endswith(("micro_batch_size", "global_batch_size")):
        return value // 2
    if spec_path.endswith("beta1") or spec_path.endswith("beta2"):
        return round(value - 0.05, 3)
    if isinstance(value, float):
        return value / 2
    return value + 2 if spec_path.endswith(("keep", "vocab_size")) else max(value - 1, 1)


def test_serving_config_follows_the_export() -> None:
    raw = spec_dict("tiny_cpu", "cpu")
    assert compile_dict(raw).serving is None
    raw["serving"] = {"target": "chat", "quantization": "int8", "gatePrompts": ["Hi"]}
    run = compile_dict(raw)
    assert run.serving is not None and run.serving.model_name == run.export.model_name == "chat"
    assert run.serving.quantization == "int8" and run.export.int8 and run.serving.gate_prompts == ("Hi",)
    assert run.serving.model_repository == run.export.model_repository
