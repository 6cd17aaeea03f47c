"""Suspend/resume and whole-gang restart after a killed trainer pod, on the embedded cluster.

These check the operator's side (children, counters, events) and need no training progress; that
the trainer resumes from its newest committed checkpoint is the trainer's resume path, exercised by
test_operator_phases.py when the run completes after its job was replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from operatorkit import (
    GROUP,
    PLURAL,
    VERSION,
    create_run,
    events,
    get_run,
    operator,
    phase,
    run_namespace,
    tiny_run,
)
from waiting import wait_for

pytestmark = pytest.mark.timeout(400)


@pytest.fixture
def ns(cluster: Any) -> Iterator[str]:
    with run_namespace(cluster, "life") as name:
        yield name


def _job_uid(cluster: Any, ns: str) -> str | None:
    try:
        return str(client.BatchV1Api(cluster.api).read_namespaced_job("tiny-train", ns).metadata.uid)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def _training(cluster: Any, ns: str, s3_bucket: str, **training: Any) -> str:
    body = tiny_run(cluster, s3_bucket, maxSteps=100000, **training)
    body["spec"]["launcher"] = "IndexedJob"
    create_run(cluster, ns, body)
    wait_for(lambda: phase(cluster, ns, "tiny") == "Training", 180, "tiny in Training")
    return wait_for(lambda: _job_uid(cluster, ns), 60, "training Job created")


def _suspend(cluster: Any, ns: str, value: bool) -> None:
    client.CustomObjectsApi(cluster.api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "tiny", {"spec": {"suspend": value}})


def test_suspend_stops_pods_and_resume_recreates_them(cluster: Any, ns: str, s3_bucket: str) -> None:
    core = client.CoreV1Api(cluster.api)
    with operator(cluster, ns):
        first = _training(cluster, ns, s3_bucket)
        _suspend(cluster, ns, True)
        wait_for(lambda: phase(cluster, ns, "tiny") == "Suspended", 60, "tiny Suspended")
        wait_for(lambda: _job_uid(cluster, ns) is None, 180, "training Job gone while suspended")
        wait_for(lambda: not core.list_namespaced_pod(ns, label_selector="kiln.dev/stage=train").items, 180,
                 "no training pods while suspended")
        _suspend(cluster, ns, False)
        wait_for(lambda: phase(cluster, ns, "tiny") == "Training", 60, "tiny Training again")
        second = wait_for(lambda: _job_uid(cluster, ns), 60, "training Job recreated on resume")
    assert second != first
    status = get_run(cluster, ns, "tiny")["status"]
    assert not status.get("restarts"), "suspend/resume is not a restart"
    reasons = [e.split(":")[0] for e in events(cluster, ns, "tiny")]
    assert "Suspended" in reasons and "Resumed" in reasons


def test_killed_trainer_pod_restarts_the_whole_gang(cluster: Any, ns: str, s3_bucket: str) -> None:
    core = client.CoreV1Api(cluster.api)
    with operator(cluster, ns):
        first = _training(cluster, ns, s3_bucket, maxRestarts=1)
        pods = wait_for(lambda: core.list_namespaced_pod(ns, label_selector="kiln.dev/stage=train").items, 120,
                        "training pods")
        core.delete_namespaced_pod(pods[0].metadata.name, ns, grace_period_seconds=0)
        wait_for(lambda: (get_run(cluster, ns, "tiny")["status"].get("restarts") or {}).get("failure") == 1, 180,
                 "one failure restart counted")
        wait_for(lambda: (uid := _job_uid(cluster, ns)) is not None and uid != first, 180, "a new gang")
        assert any(e.startswith("GangRestart") for e in events(cluster, ns, "tiny"))
        # Budget is 1: the next failure ends the run with a reason instead of looping.
        pods = wait_for(lambda: [p for p in core.list_namespaced_pod(ns, label_selector="kiln.dev/stage=train").items
                                 if p.metadata.deletion_timestamp is None], 120, "new training pods")
        core.delete_namespaced_pod(pods[0].metadata.name, ns, grace_period_seconds=0)
        wait_for(lambda: phase(cluster, ns, "tiny") == "Failed", 180, "tiny Failed after its budget")
    ready = next(c for c in get_run(cluster, ns, "tiny")["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "RestartBudgetExhausted" and "failure" in ready["message"]
