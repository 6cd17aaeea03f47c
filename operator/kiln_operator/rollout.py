"""The RollingOut phase: roll the exported version out to the run's serving target.

Called on every reconcile tick while ``status.phase`` is RollingOut (only runs with
``spec.serving`` get here, see ``status.after_export``). It learns which version the export Job
published (from that Job's result line), then advances the gated rollout one step
(`kiln_operator.serving.execute.rollout_tick`): canary → gate → in-place promotion → live.
Every step is idempotent; waiting happens between ticks.

The annotation ``kiln.dev/hold-rollout: "true"`` on the TrainingRun holds the rollout before the
canary is created (a manual approval step); removing it lets the rollout continue. The canary and
serving deadlines count from the first tick without the hold (annotation ``kiln.dev/rollout-started-at``).
The run is Succeeded only once every serving pod answers for the version (plan.py).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kiln_api.s3layout import RunLayout

from kiln_operator.builders.common import Run, child_name, metadata
from kiln_operator.configmap import compiled
from kiln_operator.serving.access import Access
from kiln_operator.serving.builders import ServingTarget
from kiln_operator.serving.execute import RolloutRequest, rollout_tick
from kiln_operator.serving.plan import Step
from kiln_operator.status import Transition

if TYPE_CHECKING:
    from kiln_operator.phases import Ctx

HOLD_ANNOTATION = "kiln.dev/hold-rollout"
CLOCK = "kiln.dev/rollout-started-at"
TRAINING_RUN = ("kiln.dev/v1alpha1", "TrainingRun")
EXPORT_RESULT_DEADLINE_S = 180.0
# The serving image: Triton plus the python packages kiln's model imports (images/serving).
SERVING_IMAGE = os.environ.get("KILN_SERVING_IMAGE", "ghcr.io/kiln-dev/kiln-serving:0.1.0")


def serving_target(run: Run) -> ServingTarget:
    spec = run.spec
    assert spec.serving is not None
    layout = RunLayout.of(spec.storage.uri, run.namespace, run.name)
    return ServingTarget(
        name=spec.serving.target,
        namespace=run.namespace,
        model=model_name(run),
        variant=compiled(run).export.variant,
        repository=layout.model_repository(),
        endpoint=spec.storage.endpoint,
        region=spec.storage.region,
        secret=spec.storage.secret_ref.name if spec.storage.secret_ref else None,
        image=SERVING_IMAGE,
        replicas=spec.serving.replicas,
        service_account=spec.storage.service_account_name,
        restrict_repository_api=Access.from_env().operator_key is not None,
    )


def model_name(run: Run) -> str:
    """Runs that serve to one target publish versions of one model named after the target, whatever
    their variant (INT8 or not is a property of the version); runs without serving use the run's name."""
    return run.name if run.spec.serving is None else run.spec.serving.target


def exported_version(ctx: Ctx) -> int | None:
    """The version the export Job published, from status or else from the Job's result line."""
    uri = str((ctx.status.get("artifacts") or {}).get("modelVersion") or "")
    layout = RunLayout.of(ctx.run.spec.storage.uri, ctx.run.namespace, ctx.run.name)
    # Only `<repository>/<model>/<N>` names a version: the Exporting step records `<repository>/<run>`,
    # whose tail is a number when the run's name is (a run named `3` must not roll out version 3).
    head, _, tail = uri.rstrip("/").rpartition("/")
    if head == f"{layout.model_repository()}/{model_name(ctx.run)}" and tail.isdigit():
        return int(tail)
    pods = ctx.kube.list("v1", "Pod", ctx.run.namespace, f"job-name={child_name(ctx.run, 'export')}")
    for pod in pods:
        for line in reversed(ctx.kube.pod_log_tail(ctx.run.namespace, pod["metadata"]["name"], 20).splitlines()):
            result = _exported(line)
            if result is None:
                continue
            version = int(result["version"])
            artifacts = dict(ctx.status.get("artifacts") or {})
            artifacts["modelVersion"] = f"{layout.model_repository()}/{model_name(ctx.run)}/{version}"
            ctx.status_patch["artifacts"] = artifacts
            return version
    return None


def _exported(line: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    result = doc.get("exported") if isinstance(doc, dict) else None
    return result if isinstance(result, dict) and "version" in result else None


def _annotations(ctx: Ctx) -> dict[str, str]:
    body = ctx.kube.get(*TRAINING_RUN, ctx.run.namespace, ctx.run.name) or {}
    return dict(body.get("metadata", {}).get("annotations") or {})


def _set_clock(ctx: Ctx, value: str | None) -> None:
    ctx.kube.patch(*TRAINING_RUN, ctx.run.namespace, ctx.run.name, {"metadata": {"annotations": {CLOCK: value}}})


def _rollout_clock(ctx: Ctx, annotations: dict[str, str]) -> float:
    """Seconds the rollout has been allowed to run: counted from the first tick without a hold, so
    time spent waiting for approval never counts against the canary or serving deadlines. Kept in an
    annotation of the run, so a restarted (or another) operator goes on with the same clock."""
    started = annotations.get(CLOCK)
    if not started:
        _set_clock(ctx, ctx.now.isoformat())
        return 0.0
    return max(0.0, (ctx.now - datetime.fromisoformat(started)).total_seconds())


def _since(ctx: Ctx) -> float:
    """Seconds since the run entered RollingOut (its RolledOut condition's transition time)."""
    for c in ctx.status.get("conditions") or []:
        if c.get("type") == "RolledOut" and c.get("lastTransitionTime"):
            return (ctx.now - datetime.fromisoformat(c["lastTransitionTime"])).total_seconds()
    return 0.0


def step_rolling_out(ctx: Ctx) -> Transition | None:
    spec = ctx.run.spec
    assert spec.serving is not None, "only runs with spec.serving reach RollingOut"
    version = exported_version(ctx)
    if version is None:
        if _since(ctx) > EXPORT_RESULT_DEADLINE_S:
            return Transition("Failed", "RolloutFailed", "ExportResultLost: the export Job's pod and its result "
                              "line are gone; delete the run's export Job and the run to export again")
        ctx.status_patch["message"] = "waiting for the export Job's result"
        return None
    annotations = _annotations(ctx)
    if annotations.get(HOLD_ANNOTATION, "").lower() == "true":
        if annotations.get(CLOCK):
            _set_clock(ctx, None)  # the deadlines start again once approved
        ctx.status_patch["message"] = f"RolloutHeld: remove annotation {HOLD_ANNOTATION} to roll out v{version}"
        return None
    owner = metadata(ctx.run, "x", "rollout").get("ownerReferences", [None])[0]
    req = RolloutRequest(
        target=serving_target(ctx.run), run=ctx.run.name, version=version, prompts=list(spec.serving.gate_prompts),
        max_latency_ms=spec.serving.max_latency_ms, trainer_image=spec.image, owner=owner,
        elapsed_s=_rollout_clock(ctx, annotations), access=Access.from_env(),
    )
    decision = rollout_tick(ctx.kube, req)
    if decision.step is Step.DONE:
        served = f"{req.target.name} v{version} ({req.target.variant})"
        ctx.event("RolledOut", f"serves {served}")
        return Transition("Succeeded", "RolledOut", f"serves {served}")
    if decision.step is Step.FAIL:
        ctx.event("RolloutFailed", f"{decision.reason}: {decision.message}", warning=True)
        return Transition("Failed", "RolloutFailed", f"{decision.reason}: {decision.message}")
    why = f" ({decision.reason}: {decision.message})" if decision.reason else ""
    ctx.status_patch["message"] = f"rollout of v{version} to {req.target.name}: {decision.step.value}{why}"
    return None
