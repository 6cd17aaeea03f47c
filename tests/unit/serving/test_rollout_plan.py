"""The rollout planner walks canary → gate → promote and fails safe before promotion."""

from dataclasses import replace

import pytest
from kiln_operator.serving.plan import Observed, PodView, Step, plan

READY = PodView(ip="10.88.0.9", ready=True)
BASE = Observed(candidate=2, live_version=1, serving_exists=True,
                serving_pods=[PodView("10.88.0.5", True, version=1)], serving_replicas=1)


def test_walks_through_a_swap():
    o = BASE
    assert plan(o).step is Step.ENSURE_CANARY
    o = replace(o, canary_version=2, canary_pod=PodView(ip=None, ready=False))
    assert plan(o).step is Step.WAIT_CANARY
    o = replace(o, canary_pod=READY)
    assert plan(o).step is Step.START_GATE
    o = replace(o, gate="Running")
    assert plan(o).step is Step.WAIT_GATE
    o = replace(o, gate="Succeeded")
    assert plan(o).step is Step.SWAP_VERSION
    o = replace(o, serving_pods=[PodView("10.88.0.5", True, version=2)])
    assert plan(o).step is Step.RECORD_LIVE
    o = replace(o, live_version=2)
    assert plan(o).step is Step.CLEANUP
    o = replace(o, canary_version=None, canary_pod=None)
    assert plan(o).step is Step.DONE


def test_first_rollout_creates_then_waits_for_serving():
    o = replace(BASE, live_version=None, serving_exists=False, serving_pods=[],
                canary_version=2, canary_pod=READY, gate="Succeeded")
    assert plan(o).step is Step.CREATE_SERVING
    o = replace(o, serving_exists=True, serving_pods=[PodView(None, False)])
    assert plan(o).step is Step.WAIT_SERVING
    o = replace(o, serving_pods=[PodView("10.88.0.6", True, version=2)])
    assert plan(o).step is Step.RECORD_LIVE


def test_gate_failure_fails_before_touching_serving():
    o = replace(BASE, canary_version=2, canary_pod=READY, gate="Failed", gate_message="greedy output differs")
    d = plan(o)
    assert (d.step, d.reason) == (Step.FAIL, "GateFailed")
    assert "differs" in d.message


@pytest.mark.parametrize("pod", [PodView(None, False, waiting_reason="CrashLoopBackOff"),
                                 PodView(None, False, restarts=3)])
def test_broken_canary_fails(pod):
    d = plan(replace(BASE, canary_version=2, canary_pod=pod))
    assert (d.step, d.reason) == (Step.FAIL, "CanaryFailed")


def test_slow_canary_times_out():
    d = plan(replace(BASE, canary_version=2, canary_pod=PodView(None, False), elapsed_s=301))
    assert (d.step, d.reason) == (Step.FAIL, "CanaryNotReady")


def test_stale_canary_of_another_version_is_replaced():
    assert plan(replace(BASE, canary_version=1, canary_pod=READY)).step is Step.ENSURE_CANARY


def test_scaled_target_waits_for_all_replicas_before_swapping():
    o = replace(BASE, serving_replicas=2, canary_version=2, canary_pod=READY, gate="Succeeded")
    assert plan(o).step is Step.WAIT_SERVING
    o = replace(o, serving_pods=[PodView("a", True, version=1), PodView("b", True, version=2)])
    assert plan(o).step is Step.SWAP_VERSION


def test_never_swaps_versions_across_repositories():
    o = replace(BASE, repository="s3://b/team-b/models", serving_repository="s3://b/team-a/models",
                canary_version=2, canary_pod=READY, gate="Succeeded")
    d = plan(o)
    assert (d.step, d.reason) == (Step.FAIL, "RepositoryMismatch")
    assert "team-a" in d.message and "team-b" in d.message
    assert plan(replace(o, serving_repository="s3://b/team-b/models")).step is Step.SWAP_VERSION
