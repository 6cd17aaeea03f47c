"""Trainer progress, from the per-run ConfigMap the trainer may write into status.progress.

The trainer's identity can patch one object: ConfigMap ``<run>-progress`` (see builders/rbac.py). The
status — phase, conditions, device-hours, cost — is the operator's alone, so a run cannot rewrite its
own usage to defeat its budget. What the trainer wrote is untrusted input: only the Progress fields,
with the right types and sane values, reach the status; anything else is reported and dropped.
"""

from __future__ import annotations

import json
import math
from typing import Any, Protocol

from kiln_api import contract as c
from kiln_api.runstatus import Progress
from kiln_api.specfields import SpecError, from_dict

from kiln_operator.builders.common import Run, metadata

STAGE = "progress"
MAX_RECORD_BYTES = 4096


class Getter(Protocol):
    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...


def build_progress_configmap(run: Run) -> dict[str, Any]:
    """Empty at first; rank 0 merges its latest record under PROGRESS_DATA_KEY."""
    meta = metadata(run, c.progress_configmap(run.name), STAGE)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {}}


def validated(raw: str) -> dict[str, Any]:
    """The progress record as status.progress may hold it; SpecError naming the field otherwise."""
    if len(raw) > MAX_RECORD_BYTES:
        raise SpecError("progress", f"record of {len(raw)} bytes, at most {MAX_RECORD_BYTES}")
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise SpecError("progress", f"not JSON: {e}") from e
    if not isinstance(body, dict):
        raise SpecError("progress", "not a JSON object")
    from_dict(Progress, body, "progress")  # known fields only, each of its type
    for key, value in body.items():
        if isinstance(value, bool):
            raise SpecError(f"progress.{key}", "a boolean where a number belongs")
        if isinstance(value, int | float) and (not math.isfinite(value) or (value < 0 and key != "loss")):
            raise SpecError(f"progress.{key}", f"{value!r} is not a finite non-negative number")
    return body


def copy_progress(kube: Getter, run: Run, status_patch: dict[str, Any]) -> None:
    """Copy the trainer's latest valid record into ``status_patch["progress"]``."""
    cm = kube.get("v1", "ConfigMap", run.namespace, c.progress_configmap(run.name))
    raw = ((cm or {}).get("data") or {}).get(c.PROGRESS_DATA_KEY)
    if not raw:
        return
    try:
        status_patch["progress"] = validated(raw)
    except SpecError as e:
        status_patch["message"] = f"InvalidProgress: the trainer's record was dropped: {e}"
