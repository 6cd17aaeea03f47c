"""The operator side of INT8: one model name per target, the variant recorded and gated, and an
export rejected by its perplexity bound ending the run (never a rollout of a version that is absent)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kiln_api import contract
from kiln_api.trainingrun import parse_spec
from kiln_operator import phases, rollout
from kiln_operator.builders.common import Run
from kiln_operator.serving import builders as b
from kiln_trainer.serving import gate

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tiny.yaml"


def _run(quantization: str) -> Run:
    raw = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text())["spec"])
    raw["serving"]["quantization"] = quantization
    return Run(name="tiny", namespace="team-a", uid="u-1", spec=parse_spec(raw))


@pytest.mark.parametrize(("quantization", "variant"), [("int8", "int8"), ("none", "float32")])
def test_the_target_name_is_the_model_name_whatever_the_variant(quantization: str, variant: str) -> None:
    t = rollout.serving_target(_run(quantization))
    assert t.model == t.name == "tiny-llm"
    assert t.variant == variant
    assert b.build_live_configmap(t, 3, "tiny")["data"]["variant"] == variant
    args = b.build_gate_job(t, run="tiny", version=3, canary_url="x:8001", prompts=[], max_latency_ms=1,
                            trainer_image="img")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--variant") + 1] == variant and args[args.index("--model") + 1] == "tiny-llm"


class _Kube:
    """Just enough API for the export and rollout steps: one export Job and its pods."""

    def __init__(self, job_status: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        self.job_status, self.pods = job_status, pods

    def create_or_adopt(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        return {**obj, "status": self.job_status}, False

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        assert selector == "job-name=tiny-export"
        return self.pods

    def pod_log_tail(self, namespace: str, name: str, lines: int = 5) -> str:
        return "[export] done\n" + json.dumps({"exported": {"model": "tiny-llm", "version": 7, "variant": "int8"}})


def _pod(code: int, message: str = "") -> dict[str, Any]:
    term = {"exitCode": code, **({"message": message} if message else {})}
    return {"metadata": {"name": "tiny-export-x"}, "status": {"containerStatuses": [{"state": {"terminated": term}}]}}


FAILED = {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit 79"}]}


def _exporting(kube: _Kube, run: Run) -> phases.Ctx:
    return phases.Ctx(kube, run, {"phase": "Exporting"}, datetime(2026, 1, 1, tzinfo=UTC))  # type: ignore[arg-type]


def test_a_rejected_int8_export_fails_the_run_with_the_perplexities() -> None:
    msg = ("QuantizationRejected: INT8 perplexity 31.2000 is +4.00% over full precision 30.0000 "
           "(bound max_ppl_increase 2.00%); nothing was published")
    t = phases.step_exporting(_exporting(_Kube(FAILED, [_pod(contract.EXIT_QUANTIZATION_REJECTED, msg)]), _run("int8")))
    assert t is not None and (t.to, t.reason) == ("Failed", "QuantizationRejected")
    assert "31.2000" in t.message and "30.0000" in t.message and not t.message.startswith("QuantizationRejected")
    # Without a termination message the reason still holds; a bad config is InvalidConfig with the
    # trainer's own line; any other failure stays ExportFailed.
    t = phases.step_exporting(_exporting(_Kube(FAILED, [_pod(contract.EXIT_QUANTIZATION_REJECTED)]), _run("int8")))
    assert t is not None and t.reason == "QuantizationRejected" and "perplexity" in t.message
    t = phases.step_exporting(_exporting(_Kube(FAILED, [_pod(contract.EXIT_BAD_CONFIG, "bad")]), _run("int8")))
    assert t is not None and t.reason == "InvalidConfig" and "bad" in t.message
    t = phases.step_exporting(_exporting(_Kube(FAILED, [_pod(1, "Traceback: boom")]), _run("int8")))
    assert t is not None and t.reason == "ExportFailed"


def test_the_exported_version_is_read_under_the_target_name() -> None:
    ctx = _exporting(_Kube({}, [_pod(0)]), _run("int8"))
    assert rollout.exported_version(ctx) == 7
    assert ctx.status_patch["artifacts"]["modelVersion"].endswith("/models/tiny-llm/7")


def test_gate_refuses_a_version_of_another_variant() -> None:
    assert gate.check_variant({"variant": "int8"}, "int8") is None
    assert gate.check_variant({"dtype": "float32"}, "float32") is None  # exported before variants were named
    wrong = gate.check_variant({"variant": "float32", "dtype": "float32"}, "int8")
    assert wrong is not None and not wrong.ok and "holds float32" in wrong.reason and "asked for int8" in wrong.reason
    assert gate.check_variant({}, None) is None


def test_kiln_generate_names_the_live_version_and_variant() -> None:
    from kiln_operator.cli.commands import live_line

    t = rollout.serving_target(_run("int8"))
    data = b.build_live_configmap(t, 4, "tiny")["data"]
    assert live_line(t.name, data) == "tiny-llm serves v4 (int8)"
    assert live_line("x", {"version": "2"}) == "x serves v2 (float32)"  # recorded before variants were
    assert live_line("x", {}) == ""
