"""The README's TrainingRun examples compile: a user who copies one gets a run, not an InvalidSpec."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kiln_api.compiler import RunIdentity, compile_run
from kiln_api.trainingrun import parse_spec

README = Path(__file__).resolve().parents[3] / "README.md"


def _runs() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    docs = [d for b in blocks for d in yaml.safe_load_all(b) if isinstance(d, dict)]
    return [d for d in docs if d.get("kind") == "TrainingRun"]


def test_readme_has_a_trainingrun_example() -> None:
    assert _runs(), "README.md shows no TrainingRun in a ```yaml block"


@pytest.mark.parametrize("run", _runs(), ids=lambda r: r["metadata"]["name"])
def test_readme_example_compiles(run: dict[str, Any]) -> None:
    compiled = compile_run(parse_spec(run["spec"]), RunIdentity(run["metadata"]["name"], "default"))
    spec = run["spec"]
    assert compiled.world_size == spec["training"]["nodes"] * spec["training"].get("processesPerNode", 1)
    # What the user wrote reaches the trainer unchanged (the preset fills in only the rest).
    assert compiled.train.batch.micro_batch_size == spec["training"]["microBatchSize"]
    assert compiled.train.batch.global_batch_size == spec["training"]["globalBatchSize"]
