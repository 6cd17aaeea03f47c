"""The export Job: ZeRO shards → safetensors → Triton model repository version in S3."""

from __future__ import annotations

from typing import Any

from kiln_operator.builders.common import Run, step_job

STAGE = "export"
DEADLINE_S = 2 * 3600
"""activeDeadlineSeconds of the Job: consolidating and uploading even a 7B model takes minutes, so 2 h
without finishing means a pod that never started or hangs; the Job then fails with DeadlineExceeded."""


def build_export_job(run: Run) -> dict[str, Any]:
    """``<run>-export``: one pod; consolidating ZeRO shards needs about 2× the model in RAM."""
    job = step_job(run, STAGE)
    job["spec"]["activeDeadlineSeconds"] = DEADLINE_S
    return job
