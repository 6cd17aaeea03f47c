"""The rollout never adopts or deletes objects it does not own, and never takes a version number
from a run's name."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import yaml
from kiln_api.trainingrun import parse_spec
from kiln_op_testlib import ROOT
from kiln_operator import phases, rollout
from kiln_operator.builders.common import Run
from kiln_operator.serving import builders as b
from kiln_operator.serving import execute as ex
from kiln_operator.serving.plan import Step

T = b.ServingTarget(name="llm", namespace="ns", model="llm", repository="s3://b/models", endpoint=None,
                    secret="s3", image="img")
OWNER = {"apiVersion": "kiln.dev/v1alpha1", "kind": "TrainingRun", "name": "r2", "uid": "uid-r2"}


class Kube:
    """Objects by (kind, name) in one namespace; records deletes."""

    def __init__(self, *objs: dict[str, Any]) -> None:
        self.objs = {(o["kind"], o["metadata"]["name"]): o for o in objs}
        self.deleted: list[str] = []

    def get(self, api_version: str, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return self.objs.get((kind, name))

    def create_or_adopt(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        key = (obj["kind"], obj["metadata"]["name"])
        created = key not in self.objs
        return self.objs.setdefault(key, obj), created

    def delete(self, api_version: str, kind: str, ns: str, name: str, propagation: str = "Background") -> bool:
        self.deleted.append(f"{kind}/{name}")
        return self.objs.pop((kind, name), None) is not None

    def list(self, api_version: str, kind: str, ns: str, selector: str) -> list[dict[str, Any]]:
        return []

    def patch(self, *args: Any) -> None:
        raise AssertionError(f"no patch expected: {args}")

    def pod_log_tail(self, ns: str, name: str, lines: int = 5) -> str:
        return ""


def _req(version: int = 2) -> ex.RolloutRequest:
    return ex.RolloutRequest(target=T, run="r2", version=version, prompts=["hi"], max_latency_ms=1000,
                             trainer_image="trainer", owner=OWNER, elapsed_s=1.0)


def _foreign(kind: str, name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": "ns", "labels": {
        "app": "someone-elses", **labels}}}


def test_a_foreign_canary_is_neither_adopted_nor_deleted() -> None:
    foreign = _foreign("Deployment", "llm-canary", **{"kiln.dev/version": "1"})
    kube = Kube(foreign)
    d = ex.rollout_tick(kube, _req())
    assert (d.step, d.reason) == (Step.FAIL, "OwnershipConflict")
    assert "Deployment ns/llm-canary" in d.message and "not managed by kiln" in d.message
    assert kube.deleted == [] and kube.objs[("Deployment", "llm-canary")] is foreign


def test_foreign_serving_objects_are_conflicts_too() -> None:
    for kind, name in (("Deployment", "llm"), ("Service", "llm"), ("ConfigMap", "llm-serving")):
        # Labelled for another target: still not this target's.
        d = ex.rollout_tick(Kube(_foreign(kind, name, **{"app.kubernetes.io/part-of": "kiln",
                                                         "kiln.dev/serving-target": "other"})), _req())
        assert (d.step, d.reason) == (Step.FAIL, "OwnershipConflict") and f"{kind} ns/{name}" in d.message


def test_kilns_own_stale_canary_is_still_replaced() -> None:
    kube = Kube(b.build_canary_deployment(T, 1, "r1"))
    d = ex.rollout_tick(kube, _req())
    assert d.step is Step.ENSURE_CANARY and kube.deleted == ["Deployment/llm-canary"]


def test_a_gate_job_the_run_does_not_own_never_counts_as_passed() -> None:
    canary = b.build_canary_deployment(T, 2, "r2")
    fake_gate = {"apiVersion": "batch/v1", "kind": "Job", "status": {"succeeded": 1},
                 "metadata": {"name": "r2-gate-v2", "namespace": "ns", "ownerReferences": [{"uid": "someone"}]}}
    d = ex.rollout_tick(Kube(canary, fake_gate), _req())
    assert (d.step, d.reason) == (Step.FAIL, "OwnershipConflict") and "Job ns/r2-gate-v2" in d.message


def _digit_run() -> Run:
    raw = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())["spec"])
    return Run(name="3", namespace="team-a", uid="u-3", spec=parse_spec(raw))


class _ExportKube:
    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        return []


def test_a_run_named_with_digits_never_rolls_out_that_version_number() -> None:
    run = _digit_run()
    ctx = phases.Ctx(_ExportKube(), run, {"phase": "RollingOut"}, datetime(2026, 1, 1, tzinfo=UTC))  # type: ignore[arg-type]
    # What the Exporting step records for run `3`: `<repository>/3`.
    repo = rollout.RunLayout.of(run.spec.storage.uri, run.namespace, run.name).model_repository()
    ctx.status["artifacts"] = {"modelVersion": f"{repo}/3"}
    assert rollout.exported_version(ctx) is None  # waits for the export Job's result instead
    ctx.status["artifacts"] = {"modelVersion": f"{repo}/{rollout.model_name(run)}/7"}
    assert rollout.exported_version(ctx) == 7
