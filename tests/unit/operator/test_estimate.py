"""Preflight arithmetic against hand-computed cases (ZeRO paper table, Korthikanti activations)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
from kiln_api.estimate import (
    FRAMEWORK_OVERHEAD_BYTES,
    Shape,
    activation_bytes,
    estimate,
    model_shape,
    model_state_bytes,
    param_count,
    parse_quantity,
)
from kiln_api.specfields import SpecError
from kiln_api.train_config import ModelConfig
from kiln_api.trainingrun import ModelSpec, TrainingRunSpec, ZeroSpec, parse_spec
from kiln_op_testlib import gpu_spec_dict, load_example

PSI = 7_500_000_000  # the ZeRO paper's Figure 1 example: 7.5B parameters on 64 GPUs, K = 12


@pytest.mark.parametrize(
    ("stage", "expected_gb"),
    [(0, 120.0), (1, 31.40625), (2, 16.640625), (3, 1.875)],  # the paper rounds to 120, 31.4, 16.6, 1.9 GB
)
def test_zero_stages_match_the_paper(stage: int, expected_gb: float) -> None:
    params, grads, opt, host = model_state_bytes(PSI, "bf16", ZeroSpec(stage=stage), devices=64)
    assert (params + grads + opt) / 1e9 == pytest.approx(expected_gb)
    assert host == 0


def test_offload_moves_state_to_host() -> None:
    params, grads, opt, host = model_state_bytes(PSI, "bf16", ZeroSpec(stage=2, offload_optimizer=True), 64)
    assert (params, grads, opt) == (2 * PSI, 2 * PSI // 64, 0)
    assert host == 12 * PSI // 64
    params, grads, opt, host = model_state_bytes(
        PSI, "bf16", ZeroSpec(stage=3, offload_optimizer=True, offload_params=True), 64)
    assert (params, opt) == (0, 0) and grads == 2 * PSI // 64
    assert host == (12 * PSI + 2 * PSI) // 64


def test_fp32_keeps_no_master_copy() -> None:
    assert model_state_bytes(1000, "fp32", ZeroSpec(stage=0), 1) == (4000, 4000, 8000, 0)


def test_activations_match_korthikanti() -> None:
    # s=2048, b=1, h=4096, a=32, one layer: s·b·h·(34 + 5·a·s/h) = 8,388,608 × 114 bytes (classic block,
    # which stores attention scores); the SDPA block keeps 8,388,608 × 34. Plus fp32 logits 4·s·b·V, V=1.
    classic = ModelConfig(vocab_size=1, d_model=4096, n_layers=1, n_heads=32, max_seq_len=2048, arch="classic")
    assert activation_bytes(Shape(classic, 2048), 1, checkpointing=False) == 8_388_608 * 114 + 4 * 2048
    gpt = replace(classic, arch="gpt", n_layers=3)
    assert activation_bytes(Shape(gpt, 2048), 1, checkpointing=False) == 3 * 8_388_608 * 34 + 4 * 2048
    # Full checkpointing: the 3 layer inputs (2·s·b·h each) plus one layer recomputed at a time.
    assert activation_bytes(Shape(gpt, 2048), 1, checkpointing=True) == \
        3 * 2 * 8_388_608 + 8_388_608 * 34 + 4 * 2048


def test_tiny_param_count_by_hand() -> None:
    # tiny_cpu: h=64, L=2, 4 heads, 2 kv heads (d=16 → kv width 32), SwiGLU f = ceil64(8·64/3) = 192,
    # vocabulary from the tokenizer (512). Per layer 2h² + 2·h·32 + 3·h·f + 2h = 8192 + 4096 + 36864 + 128.
    shape = model_shape(ModelSpec(preset="tiny_cpu"), vocab_size=512)
    assert param_count(shape.model) == 2 * 49_280 + 512 * 64 + 64


def test_tiny_estimate_end_to_end() -> None:
    spec = parse_spec(load_example("tiny.yaml")["spec"])
    e = estimate(spec)
    psi = 2 * 49_280 + 2000 * 64 + 64  # the example's tokenizer has 2000 pieces
    assert e.params == psi
    assert e.tokens == 400 * 8 * 64  # maxSteps × globalBatchSize × the preset's seq_len
    assert e.flops == 6 * psi * e.tokens
    # fp32, ZeRO-1 over 2 CPU pods: 4Ψ params + 4Ψ grads + 8Ψ/2 optimizer.
    assert e.memory.params == 4 * psi and e.memory.grads == 4 * psi and e.memory.optimizer == 4 * psi
    assert e.memory.total == 12 * psi + e.memory.activations + FRAMEWORK_OVERHEAD_BYTES
    assert e.device_memory == 2 * 1024**3 and e.fits
    assert e.hours == pytest.approx(e.flops / (2 * 1.0e12 * 0.35) / 3600)


def _spec(**training: object) -> TrainingRunSpec:
    raw = copy.deepcopy(gpu_spec_dict())
    raw["model"] = {"preset": "gpt_7b"}
    raw["training"].update(training)
    return parse_spec(raw)


def test_7b_on_zero1_does_not_fit_and_zero3_is_suggested() -> None:
    # 8 × H100-80GB, micro-batch 3 at s=4096: 2Ψ + 2Ψ + 12Ψ/8 ≈ 36 GiB of state + ~51 GiB activations.
    e = estimate(_spec(nodes=1, zero={"stage": 1}, microBatchSize=3, globalBatchSize=24, activationCheckpointing=False))
    assert not e.fits
    assert e.memory.params == 2 * e.params  # stage 1 keeps all 16-bit params on every GPU
    assert "zero.stage: 3" in e.suggestion
    fixed = estimate(_spec(nodes=1, zero={"stage": 3}, microBatchSize=3, globalBatchSize=24, activationCheckpointing=False))
    assert fixed.memory.params == 2 * e.params // 8
    assert fixed.fits


def test_hopeless_run_says_add_devices() -> None:
    raw = copy.deepcopy(gpu_spec_dict())
    raw["model"] = {"preset": "custom", "custom": {"layers": 200, "hidden": 16384, "heads": 128, "seqLen": 8192}}
    raw["training"].update(nodes=1, gpusPerNode=1, microBatchSize=1, globalBatchSize=1,
                           accelerator="nvidia-l4")
    e = estimate(parse_spec(raw))
    assert not e.fits and "add nodes" in e.suggestion


def test_cost_uses_the_budget_price() -> None:
    raw = copy.deepcopy(gpu_spec_dict())
    raw["budget"] = {"pricePerGpuHour": 2.0}
    e = estimate(parse_spec(raw))
    assert e.device_hours == pytest.approx(e.hours * 32)
    assert e.cost == pytest.approx(e.device_hours * 2.0)


@pytest.mark.parametrize(("q", "value"), [("2Gi", 2 * 1024**3), ("500M", 5e8), ("1.5", 1.5), ("512Mi", 2**29)])
def test_parse_quantity(q: str, value: float) -> None:
    assert parse_quantity(q) == value


@pytest.mark.parametrize("preset", ["tiny_cpu", "gpt_125m"])
@pytest.mark.parametrize("arch", ["gpt", "classic"])
def test_param_formula_matches_the_trainer_model(preset: str, arch: str) -> None:
    """The closed form must count exactly what the trainer builds (torch meta device, no memory)."""
    pytest.importorskip("torch")
    from kiln_trainer.train.model import count_params

    shape = model_shape(ModelSpec(preset=preset), vocab_size=1000)
    cfg = replace(shape.model, arch=arch, n_kv_heads=None) if arch == "classic" else shape.model
    assert param_count(cfg) == count_params(cfg)


def test_estimate_uses_the_preset_and_checks_its_rules() -> None:
    raw = copy.deepcopy(gpu_spec_dict())
    raw["model"] = {"preset": "gpt_7b"}
    for key in ("microBatchSize", "globalBatchSize", "zero", "precision"):
        raw["training"].pop(key, None)
    e = estimate(parse_spec(raw))  # gpt_7b's ZeRO-3, checkpointing, micro-batch 1: fits 32 H100s
    assert e.fits and e.memory.params == 2 * e.params // 32
    raw["training"]["nodes"] = 3  # 512 sequences over 24 ranks: only the resolved spec shows it
    with pytest.raises(SpecError, match=r"^spec.training.globalBatchSize: globalBatchSize=512"):
        estimate(parse_spec(raw))
