"""The measured calibration of `kiln estimate` (kiln_api.estimate_calibration): arithmetic, cache, status."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln_api.estimate import FRAMEWORK_OVERHEAD_BYTES, estimate
from kiln_api.estimate_calibration import Calibration, estimate_vs_actual, load_cached, save
from kiln_api.trainingrun import parse_spec
from kiln_op_testlib import load_example

CAL = Calibration("cpu/test/2", overhead_s=0.02, flops_per_s=2e9, base_memory_bytes=600 * 2**20,
                  measured_at="2026-12-07T00:00:00+00:00")


def tiny_spec():  # noqa: ANN201
    return parse_spec(load_example("tiny.yaml")["spec"])


def test_calibrated_step_time_is_overhead_plus_flops_over_rate() -> None:
    spec = tiny_spec()
    e = estimate(spec, calibration=CAL)
    t = spec.training
    seq = 64  # tiny_cpu's sequence length
    flops_per_device = 6.0 * e.params * t.global_batch_size * seq / t.devices()
    assert e.step_seconds == pytest.approx(0.02 + flops_per_device / 2e9)
    assert e.hours == pytest.approx(e.step_seconds * t.max_steps / 3600)
    assert e.calibration == "cpu/test/2"
    # the measured process memory replaces the fixed CUDA-context overhead
    assert e.memory.overhead == 600 * 2**20
    assert estimate(spec).memory.overhead == FRAMEWORK_OVERHEAD_BYTES


def test_uncalibrated_time_is_unchanged_peak_times_mfu() -> None:
    e = estimate(tiny_spec())
    assert e.calibration == ""
    assert e.hours == pytest.approx(e.flops / (2 * 1.0e12 * 0.35) / 3600)


def test_cache_round_trip_and_bad_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    assert load_cached(CAL.device_class) is None
    path = save(CAL)
    assert path.parent == tmp_path / "calibration"
    assert load_cached(CAL.device_class) == CAL
    path.write_text('{"device_class": "x", "overhead_s": 0.1, "flops_per_s": 0, "base_memory_bytes": 1, '
                    '"measured_at": "t"}')
    with pytest.raises(ValueError, match="flops_per_s must be > 0"):
        load_cached(CAL.device_class)
    path.write_text('{"device_class": "x"}')
    with pytest.raises(ValueError, match="missing or malformed field 'overhead_s'"):
        load_cached(CAL.device_class)


def test_status_records_estimate_vs_actual() -> None:
    status = {"estimate": {"params": 10, "stepSeconds": 0.05},
              "progress": {"step": 400, "tokens": 400 * 512, "tokensPerSecond": 5120.0}}
    out = estimate_vs_actual(status)
    assert out["actualStepSeconds"] == pytest.approx(0.1)
    assert out["stepRatio"] == pytest.approx(0.5)
    assert out["params"] == 10
    assert "actualStepSeconds" not in estimate_vs_actual({"estimate": {"stepSeconds": 1.0}, "progress": {"step": 0}})


def test_kiln_estimate_times_a_cpu_run_with_the_cached_calibration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import replace

    from kiln_api.estimate_calibration import cpu_device_class
    from kiln_operator.cli import main

    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    save(replace(CAL, device_class=cpu_device_class(), overhead_s=0.5))
    example = Path(__file__).resolve().parents[3] / "examples" / "tiny.yaml"
    assert main(["estimate", "-f", str(example)]) == 0
    out = capsys.readouterr().out
    assert f"calibrated on {cpu_device_class()}" in out
    step_line = next(line for line in out.splitlines() if line.strip().startswith("step time "))
    assert float(step_line.split()[2]) > 0.5  # the cached overhead alone is 0.5 s per step
