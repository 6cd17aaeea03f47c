"""The export Job: ZeRO shards → safetensors → Triton model repository version in S3."""

from __future__ import annotations

from typing import Any

from kiln_operator.builders.common import Run, step_job

STAGE = "export"


def build_export_job(run: Run) -> dict[str, Any]:
    """``<run>-export``: one pod; consolidating ZeRO shards needs about 2× the model in RAM."""
    return step_job(run, STAGE)
