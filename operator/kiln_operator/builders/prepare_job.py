"""The data-preparation Job: sources → clean → dedup → tokenizer → packed shards in S3."""

from __future__ import annotations

from typing import Any

from kiln_operator.builders.common import Run, step_job

STAGE = "prepare"


def build_prepare_job(run: Run) -> dict[str, Any]:
    """``<run>-prepare``: one pod, retried twice by Kubernetes (preparation resumes from its parts)."""
    return step_job(run, STAGE)
