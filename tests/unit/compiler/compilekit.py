"""Specs for compiler tests: one per preset and hardware shape, built from the tiny example."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from kiln_api.compiler import CompiledRun, RunIdentity, compile_run
from kiln_api.trainingrun import parse_spec

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).parent / "golden"
WHO = RunIdentity(name="golden", namespace="team-a")

HARDWARE: dict[str, dict[str, Any]] = {
    "cpu": {"nodes": 1, "gpusPerNode": 0, "accelerator": "cpu"},
    "1gpu": {"nodes": 1, "gpusPerNode": 1, "accelerator": "nvidia-h100-80gb"},
    "2x8gpu": {"nodes": 2, "gpusPerNode": 8, "accelerator": "nvidia-h100-80gb"},
}


def spec_dict(preset: str, hardware: str, **training: Any) -> dict[str, Any]:
    """The tiny example's storage and data, the named preset, and only what a user must write."""
    doc = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    raw = copy.deepcopy(doc["spec"])
    raw["data"] = {"sources": raw["data"]["sources"]}  # the tokenizer's vocabulary from the preset too
    raw["model"] = {"preset": preset}
    # The GPU presets' own budget (20B tokens): long enough for their warmup except on gpt_7b's larger steps.
    raw["training"] = {**HARDWARE[hardware], "maxTokens": 20 * 10**9, **training}
    raw.pop("serving")
    return raw


def compile_dict(raw: dict[str, Any]) -> CompiledRun:
    return compile_run(parse_spec(raw), WHO)


def check_golden(name: str, value: Any) -> None:
    """Compare with golden/<name>.yaml; KILN_UPDATE_GOLDEN=1 rewrites it (review the diff!)."""
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("KILN_UPDATE_GOLDEN") == "1":
        path.write_text(yaml.safe_dump(value, sort_keys=True, width=110, allow_unicode=True))
    assert path.exists(), f"{path} missing; run with KILN_UPDATE_GOLDEN=1 once and review it"
    assert yaml.safe_load(path.read_text()) == value, f"{name} differs from {path}"
