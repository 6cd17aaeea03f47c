"""Helpers for operator unit tests: example specs and a golden-file comparer."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from kiln_operator.kube import AdoptionConflict

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).parent / "golden"


def load_example(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "examples" / name).read_text())
    assert isinstance(doc, dict)
    return doc


def gpu_spec_dict() -> dict[str, Any]:
    """A GPU-shaped variant of the tiny example: 4 nodes × 8 H100, spot, ZeRO-3, serving."""
    raw = copy.deepcopy(load_example("tiny.yaml")["spec"])
    raw["model"] = {"preset": "gpt_1b"}
    raw["training"].update(nodes=4, gpusPerNode=8, accelerator="nvidia-h100-80gb", precision="bf16",
                           microBatchSize=2, globalBatchSize=256, spot=True, zero={"stage": 3},
                           resources={"cpu": "32", "memory": "512Gi"})
    raw["storage"] = {"uri": "s3://team-a/runs", "serviceAccountName": "team-a-s3"}
    raw["serving"] = {"target": "chat", "gatePrompts": ["Once upon a time"]}
    return raw


class _NoAliases(yaml.SafeDumper):
    """Golden files spell every value out (no &anchors), so a reviewer reads them top to bottom."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def check_golden(name: str, objects: Any) -> None:
    """Compare with golden/<name>.yaml; KILN_UPDATE_GOLDEN=1 rewrites it (review the diff!)."""
    path = GOLDEN / f"{name}.yaml"
    text = yaml.dump(objects, Dumper=_NoAliases, sort_keys=True, width=110)
    if os.environ.get("KILN_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} missing; run with KILN_UPDATE_GOLDEN=1 once and review it"
    assert yaml.safe_load(path.read_text()) == objects, f"{name} differs from {path}"


class FakeKube:
    """Objects by (kind, name); deletes with Foreground leave the object terminating until `gc()`."""

    def __init__(self, kubeflow: bool = True) -> None:
        self.objs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.kubeflow = kubeflow
        self.creates = 0
        self.logs: dict[str, str] = {}
        """Pod name → what its container wrote (for pod_log_tail)."""

    def create_or_adopt(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in self.objs:
            have = self.objs[key]["metadata"]["ownerReferences"][0]["uid"]
            if have != obj["metadata"]["ownerReferences"][0]["uid"]:
                raise AdoptionConflict("owned by someone else")
            return self.objs[key], False
        self.creates += 1
        self.objs[key] = copy.deepcopy(obj)
        return self.objs[key], True

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objs.get((kind, name))

    def delete(self, api_version: str, kind: str, namespace: str, name: str, propagation: str = "Background") -> bool:
        obj = self.objs.get((kind, name))
        if obj is None:
            return False
        obj["metadata"]["deletionTimestamp"] = "now"
        return True

    def gc(self) -> None:
        self.objs = {k: v for k, v in self.objs.items() if "deletionTimestamp" not in v["metadata"]}

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.pods

    def warnings_about(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        return [e for e in getattr(self, "events", []) if (e.get("involvedObject") or {}).get("name") == name]

    def has_api(self, group_version: str, plural: str) -> bool:
        return self.kubeflow

    def pod_log_tail(self, namespace: str, name: str, lines: int = 5) -> str:
        return "\n".join(self.logs.get(name, "").splitlines()[-lines:])

    def finish(self, kind: str, name: str, ctype: str) -> None:
        self.objs[(kind, name)]["status"] = {"conditions": [{"type": ctype, "status": "True", "reason": ctype}]}
