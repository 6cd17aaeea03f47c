"""Fixtures for operator unit tests: the tiny example and a GPU-shaped variant as parsed runs."""

from __future__ import annotations

import pytest
from kiln_api.trainingrun import TrainingRunSpec, parse_spec
from kiln_op_testlib import gpu_spec_dict, load_example
from kiln_operator.builders.common import Run


@pytest.fixture
def tiny_spec() -> TrainingRunSpec:
    return parse_spec(load_example("tiny.yaml")["spec"])


@pytest.fixture
def tiny_run(tiny_spec: TrainingRunSpec) -> Run:
    return Run(name="tiny", namespace="team-a", uid="00000000-0000-0000-0000-000000000001", spec=tiny_spec)


@pytest.fixture
def gpu_run() -> Run:
    return Run(name="big", namespace="team-a", uid="00000000-0000-0000-0000-000000000002",
               spec=parse_spec(gpu_spec_dict()))
