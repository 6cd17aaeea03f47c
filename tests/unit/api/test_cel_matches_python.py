"""The CRD's CEL rules and the Python checks, both generated from one declaration, give the same verdicts.

Specs are varied at random (seeded) over values that pass the schema's per-field bounds, so only the
cross-field rules decide. The CEL side runs in tests/unit/api/celmini.py, written without kiln_api.rules.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from celmini import evaluate
from kiln_api import crd
from kiln_api.rules import violations
from kiln_api.specfields import camel, from_dict, to_dict
from kiln_api.trainingrun import TrainingRunSpec

ROOT = Path(__file__).resolve().parents[3]

# (path below spec, candidate values): each value passes the field's own schema bounds.
POOL: list[tuple[str, list[Any]]] = [
    ("training.nodes", [1, 2, 3]),
    ("training.gpusPerNode", [0, 1, 8]),
    ("training.processesPerNode", [None, 1, 2, 8]),
    ("training.accelerator", ["cpu", "nvidia-h100-80gb"]),
    ("training.microBatchSize", [None, 1, 3, 4]),
    ("training.globalBatchSize", [None, 8, 12, 48, 64]),
    ("training.precision", [None, "fp32", "bf16", "fp16"]),
    ("training.zero", [{}, {"stage": 0}, {"stage": 2, "offloadParams": True}, {"stage": 3, "offloadParams": True},
                       {"stage": 0, "offloadOptimizer": True}, {"offloadOptimizer": True}]),
    ("training.optimizer", [{}, {"lr": 0.0}, {"lr": 0.01, "beta1": 1.0}, {"warmupSteps": 400}, {"beta2": 0.5}]),
    ("training.maxSteps", [None, 400, 10]),
    ("training.maxTokens", [None, 1000]),
    ("model", [{"preset": "tiny_cpu"}, {"preset": "custom"}, {"preset": "tiny_cpu", "objective": "distillation"},
               {"preset": "custom", "custom": {"layers": 2, "hidden": 64, "heads": 4, "kvHeads": 3}},
               {"preset": "custom", "custom": {"layers": 2, "hidden": 60, "heads": 4}},
               {"preset": "custom", "custom": {"layers": 2, "hidden": 96, "heads": 3}}]),
    ("training.parallelism", [{}, {"pipeline": 2}, {"tensor": 2}, {"pipeline": 2, "tensor": 2}, {"pipeline": 3},
                              {"tensor": 3}]),
    ("data.cleaning", [{}, {"minUnits": 10, "maxUnits": 5}]),
    ("data.sources", [[{"uri": "builtin://x/*", "format": "jsonl", "textField": ""}],
                      [{"uri": "builtin://x/*", "format": "txt", "textField": ""}]]),
]


TINY = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())["spec"]


def _base() -> dict[str, Any]:
    return copy.deepcopy(TINY)


def _put(raw: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        raw = raw.setdefault(p, {})
    if value is None:
        raw.pop(leaf, None)
    else:
        raw[leaf] = copy.deepcopy(value)


def _cel_failures(schema: dict[str, Any], obj: Any, where: str, out: set[tuple[str, str]]) -> None:
    """Run every CEL rule of ``schema`` on ``obj`` and below, as the API server does after defaulting."""
    if isinstance(obj, dict) and schema.get("type") == "object":
        for rule in schema.get("x-kubernetes-validations", []):
            if "oldSelf" not in rule["rule"] and not evaluate(rule["rule"], obj):
                out.add((where, rule["fieldPath"]))
        for name, sub in schema.get("properties", {}).items():
            if name in obj:
                _cel_failures(sub, obj[name], f"{where}.{name}", out)
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            _cel_failures(schema["items"], item, f"{where}[{i}]", out)


def _python_failures(obj: Any, where: str, out: set[tuple[str, str]]) -> None:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out.update((where, "." + rule.reported(True)) for rule in violations(obj))
        for f in dataclasses.fields(obj):
            _python_failures(getattr(obj, f.name), f"{where}.{camel(f.name)}", out)
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            _python_failures(item, f"{where}[{i}]", out)


def _variants(n: int) -> list[dict[str, Any]]:
    rng = random.Random(20261207)
    out = []
    for _ in range(n):
        raw = _base()
        for path, values in rng.sample(POOL, k=rng.randint(1, 5)):
            _put(raw, path, rng.choice(values))
        out.append(raw)
    return out


SCHEMA = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


@pytest.mark.parametrize("raw", _variants(150))
def test_cel_and_python_agree(raw: dict[str, Any]) -> None:
    spec = from_dict(TrainingRunSpec, raw, "spec")  # types and bounds only; the rules are what we compare
    defaulted = to_dict(spec)  # what the API server stores after applying the schema's defaults
    cel: set[tuple[str, str]] = set()
    python: set[tuple[str, str]] = set()
    _cel_failures(SCHEMA, defaulted, "spec", cel)
    _python_failures(spec, "spec", python)
    assert cel == python


def test_the_variants_exercise_the_rules() -> None:
    failing = set()
    for raw in _variants(150):
        found: set[tuple[str, str]] = set()
        _python_failures(from_dict(TrainingRunSpec, raw, "spec"), "spec", found)
        failing |= found
    # most rules are broken by some variant, so agreement above is not agreement on "all pass"
    assert len(failing) >= 12, sorted(failing)
