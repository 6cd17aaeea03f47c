"""Trainer progress reaches status only through the operator's validation
(the trainer's own token: tests/integration/test_security_trainer_identity.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kiln_operator.builders.common import Run
from kiln_operator.progress import build_progress_configmap, copy_progress

GOOD = {"step": 10, "tokens": 5120, "loss": 3.2, "tokensPerSecond": 900, "etaSeconds": 40,
        "updatedAt": "2026-11-27T00:00:00Z"}


class _Kube:
    def __init__(self, data: dict[str, str] | None) -> None:
        self.data = data

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert (kind, name) == ("ConfigMap", "tiny-progress")
        return None if self.data is None else {"data": self.data}


def _copied(tiny_run: Run, raw: str | None) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    copy_progress(_Kube(None if raw is None else {"progress.json": raw}), tiny_run, patch)
    return patch


def test_a_valid_record_is_copied(tiny_run: Run) -> None:
    assert _copied(tiny_run, json.dumps(GOOD)) == {"progress": GOOD}
    assert _copied(tiny_run, None) == {}


@pytest.mark.parametrize(("record", "field"), [
    ({**GOOD, "gpuHours": 0.0}, "progress.gpuHours"),  # usage is the operator's, never the trainer's
    ({"phase": "Succeeded"}, "progress.phase"),
    ({"step": -5}, "progress.step"),
    ({"tokensPerSecond": float("nan")}, "progress.tokensPerSecond"),
    ({"step": "ten"}, "progress.step"),
    ({"step": True}, "progress.step"),
    ([1, 2], "progress"),
])
def test_anything_else_is_dropped_with_the_field_named(tiny_run: Run, record: Any, field: str) -> None:
    patch = _copied(tiny_run, json.dumps(record))
    assert "progress" not in patch
    assert patch["message"].startswith("InvalidProgress") and field in patch["message"], patch


def test_oversized_or_broken_records_are_dropped(tiny_run: Run) -> None:
    assert "progress" not in _copied(tiny_run, json.dumps({"updatedAt": "x" * 5000}))
    assert "progress" not in _copied(tiny_run, "{not json")


def test_the_progress_configmap_is_the_runs_child(tiny_run: Run) -> None:
    cm = build_progress_configmap(tiny_run)
    assert cm["metadata"]["name"] == "tiny-progress" and cm["metadata"]["ownerReferences"][0]["uid"] == tiny_run.uid
