"""The data-preparation Job: sources → clean → dedup → tokenizer → packed shards in S3."""

from __future__ import annotations

from typing import Any

from kiln_operator.builders.common import Run, step_job

STAGE = "prepare"
DEADLINE_S = 6 * 3600
"""activeDeadlineSeconds of the Job: a prepare that has not finished in 6 h (its pods never started,
or it stopped progressing) fails with DeadlineExceeded instead of holding the run forever. Long
enough for a multi-GB corpus on one pod; retries count against the same deadline."""


def build_prepare_job(run: Run) -> dict[str, Any]:
    """``<run>-prepare``: one pod, retried twice by Kubernetes (preparation resumes from its parts)."""
    job = step_job(run, STAGE)
    job["spec"]["activeDeadlineSeconds"] = DEADLINE_S
    return job
