"""A rollout is Succeeded only when every serving pod answers for the new version; a pod that cannot
load it keeps the run RollingOut with the reason, then fails it by deadline. Time held for manual
approval does not count against the deadlines."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from kiln_operator import rollout
from kiln_operator.serving import execute as ex
from kiln_operator.serving.plan import Decision, Observed, PodView, Step, plan
from test_rollout_execute import FakeKube, live_target, req  # noqa: F401 - live_target is a fixture

LIVE = Observed(candidate=1, live_version=1, serving_exists=True, serving_replicas=1,
                serving_pods=[PodView("10.0.0.5", True, version=1)])
CRASHING = PodView(None, False, waiting_reason="CrashLoopBackOff", restarts=4)


def test_recorded_live_but_a_pod_crashing_is_not_done():
    assert plan(LIVE).step is Step.DONE
    d = plan(replace(LIVE, serving_pods=[CRASHING], elapsed_s=30))
    assert (d.step, d.reason) == (Step.WAIT_SERVING, "ServingNotReady") and "CrashLoopBackOff" in d.message
    d = plan(replace(LIVE, serving_pods=[CRASHING], elapsed_s=LIVE.serving_deadline_s + 1))
    assert (d.step, d.reason) == (Step.FAIL, "ServingNotReady") and "CrashLoopBackOff" in d.message


def test_a_ready_pod_that_does_not_answer_for_the_version_is_not_done():
    d = plan(replace(LIVE, serving_pods=[PodView("10.0.0.5", True, version=None)]))
    assert (d.step, d.reason) == (Step.WAIT_SERVING, "ServingNotReady") and "10.0.0.5: serves vNone" in d.message


def test_first_rollout_whose_pods_never_load_fails_by_deadline():
    o = Observed(candidate=1, live_version=None, serving_exists=True, serving_pods=[CRASHING],
                 canary_version=1, canary_pod=PodView("10.0.0.9", True), gate="Succeeded")
    assert plan(o).step is Step.WAIT_SERVING
    assert plan(replace(o, elapsed_s=o.serving_deadline_s + 1)).reason == "ServingNotReady"


def test_observe_asks_each_pod_instead_of_trusting_the_live_record(live_target):  # noqa: F811
    kube, served = live_target
    served.clear()  # the pod restarted and serves nothing; the Deployment still says v1 is live
    o = ex.observe(kube, req(version=1))
    assert o.live_version == 1 and [p.version for p in o.serving_pods] == [None]
    assert plan(o).step is Step.WAIT_SERVING


class RunKube(FakeKube):
    """The run object with annotations, for rollout.py's hold and clock."""

    def __init__(self, annotations):
        super().__init__()
        self.objs[("TrainingRun", "ns", "r2")] = {"kind": "TrainingRun",
                                                  "metadata": {"name": "r2", "annotations": annotations}}

    def patch(self, api_version, kind, ns, name, body):
        ann = self.objs[(kind, ns, name)]["metadata"]["annotations"]
        for k, v in body["metadata"]["annotations"].items():
            ann.pop(k, None) if v is None else ann.__setitem__(k, v)


def test_time_held_for_approval_does_not_count_against_the_deadline(monkeypatch):
    seen = []
    monkeypatch.setattr(rollout, "exported_version", lambda ctx: 2)
    monkeypatch.setattr(rollout, "serving_target", lambda run: ex.b.ServingTarget(
        name="llm", namespace="ns", model="llm", repository="s3://b/m", endpoint=None, secret=None,
        image="i", replicas=1))
    monkeypatch.setattr(rollout, "metadata", lambda *a: {})
    monkeypatch.setattr(rollout, "rollout_tick", lambda kube, r: seen.append(r.elapsed_s) or Decision(Step.WAIT_CANARY))
    kube = RunKube({rollout.HOLD_ANNOTATION: "true"})
    entered = datetime(2026, 1, 1, tzinfo=UTC)
    serving = SimpleNamespace(gate_prompts=["hi"], max_latency_ms=1000)
    run = SimpleNamespace(name="r2", namespace="ns", spec=SimpleNamespace(serving=serving, image="t"))

    def tick(minutes):
        ctx = SimpleNamespace(kube=kube, run=run, now=entered + timedelta(minutes=minutes), status_patch={},
                              status={"conditions": [{"type": "RolledOut", "lastTransitionTime": entered.isoformat()}]},
                              event=lambda *a, **k: None)
        return rollout.step_rolling_out(ctx), ctx.status_patch

    assert tick(1) == (None, {"message": "RolloutHeld: remove annotation kiln.dev/hold-rollout to roll out v2"})
    kube.objs[("TrainingRun", "ns", "r2")]["metadata"]["annotations"].pop(rollout.HOLD_ANNOTATION)  # approved
    tick(30)  # 30 min after RollingOut began: far past the 5 min canary deadline
    tick(32)
    assert seen == [0.0, pytest.approx(120.0)]
