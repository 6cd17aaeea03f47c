"""R5: a child deleted underneath is repaired (or the run fails with a reason) within 60 s, and run
deletions — some while the operator is down — leave nothing stuck Terminating.

Scaled down from the issue's "every child kind; 100 deletions, 20 while the operator is down": the
prepare Job (the one child kind of a run's first phase that a tick re-creates) is deleted 3 times,
and 10 runs are deleted, 4 of them while the operator is stopped. Runs beyond the first wait in
Pending for an initFrom run that does not exist, so no pods load the 2-core machine. Deleting the
ConfigMap, the RBAC objects, the PyTorchJob or the serving Deployment is not covered here.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from kubernetes import client
from operatorkit import GROUP, PLURAL, VERSION, create_run, operator, phase, run_namespace, tiny_run
from waiting import wait_for

pytestmark = pytest.mark.timeout(600)
JOB_DELETIONS, RUN_DELETIONS, WHILE_DOWN = 3, 10, 4
REPAIR_LIMIT_S = 60.0


def _job_uid(batch: client.BatchV1Api, ns: str, name: str) -> str | None:
    try:
        job = batch.read_namespaced_job(name, ns)
    except client.ApiException:
        return None
    return None if job.metadata.deletion_timestamp else str(job.metadata.uid)


def _waiting_run(cluster: Any, bucket: str, name: str) -> dict[str, Any]:
    body = copy.deepcopy(tiny_run(cluster, bucket, name=name))
    body["spec"]["model"]["initFrom"] = {"run": "does-not-exist"}  # held in Pending: no pods
    return body


def _runs(custom: client.CustomObjectsApi, ns: str) -> list[dict[str, Any]]:
    return list(custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"])


def test_deleted_children_are_repaired_and_deleted_runs_go_away(cluster: Any, s3_bucket: str, figure: Any) -> None:
    batch, custom = client.BatchV1Api(cluster.api), client.CustomObjectsApi(cluster.api)
    with run_namespace(cluster, "r5") as ns:
        repairs: list[float] = []
        with operator(cluster, ns):
            create_run(cluster, ns, tiny_run(cluster, s3_bucket, name="child"))
            job = "child-prepare"
            for _ in range(JOB_DELETIONS):
                uid = wait_for(lambda: _job_uid(batch, ns, job), 90, "the prepare Job exists")
                batch.delete_namespaced_job(job, ns, propagation_policy="Background")
                t0 = time.monotonic()
                wait_for(lambda u=uid: (_job_uid(batch, ns, job) not in (None, u)) or phase(cluster, ns, "child") == "Failed",
                         REPAIR_LIMIT_S + 30, "prepare Job re-created or run Failed")
                repairs.append(time.monotonic() - t0)
            for i in range(RUN_DELETIONS):
                create_run(cluster, ns, _waiting_run(cluster, s3_bucket, f"gone-{i}"))
            wait_for(lambda: all(phase(cluster, ns, f"gone-{i}") for i in range(RUN_DELETIONS)), 60,
                     "the operator saw every run (each has a phase)")
            for i in range(RUN_DELETIONS - WHILE_DOWN):
                custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, f"gone-{i}")
        # The operator is down. Runs carry no finalizer of the operator's (no timers, an optional delete
        # handler), so nothing waits for it: these go at once, their children with them (owner references).
        for i in range(RUN_DELETIONS - WHILE_DOWN, RUN_DELETIONS):
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, f"gone-{i}")
        assert not [r for r in _runs(custom, ns) if (r["metadata"].get("finalizers") or [])], \
            "a run carries a finalizer: deleting it while no operator runs would leave it Terminating"
        t0 = time.monotonic()
        with operator(cluster, ns):
            wait_for(lambda: not [r for r in _runs(custom, ns) if r["metadata"]["name"].startswith("gone-")], 120,
                     "every deleted run is gone")
            cleared = time.monotonic() - t0
        stuck = [r["metadata"]["name"] for r in _runs(custom, ns) if r["metadata"].get("deletionTimestamp")]
    figure(f"R5 prepare Job deleted {JOB_DELETIONS}x -> re-created after {', '.join(f'{t:.1f}' for t in repairs)} s "
           f"(limit {REPAIR_LIMIT_S:.0f} s); {RUN_DELETIONS} run deletions ({WHILE_DOWN} while the operator was "
           f"down) -> {len(stuck)} stuck Terminating, all gone {cleared:.1f} s after the operator came back "
           f"(no finalizer: none waited for it)")
    assert max(repairs) <= REPAIR_LIMIT_S and stuck == []
