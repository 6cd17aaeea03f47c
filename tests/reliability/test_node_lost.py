"""A node lost during training: the gang restarts from the last commit and the run ends Succeeded.

A 2-pod tiny run (one pod per node) trains under the operator. Once a checkpoint is committed, one
node is lost the way a crashed machine goes: its kubelet is stopped and its training container killed
(stopping the kubelet alone leaves containers running: the gang would simply go on). The rank on the
surviving node fails on its broken peer, the operator restarts the whole gang, and the new gang
resumes from the newest commit once the node is back. The node is restarted (`up`) at the end of
detection, so later tests have two nodes again.

Figure: seconds from the loss to the operator's GangRestart, from the node's return to the resumed
gang's first step, and the step it resumed from. No dev-cluster setting was changed for this test:
the restart needs no Node condition (the survivor's failure is the signal). The lost node's pod stays
Terminating while its kubelet is down, so the new gang starts once the node is back.
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any

import pytest
from clusterlib import devcluster
from kiln_devcluster import procs
from kubernetes import client
from nodekit import pod_log
from operatorkit import create_run, events, get_run, operator, phase, run_namespace, tiny_run
from waiting import wait_for

pytestmark = pytest.mark.timeout(1500)  # `up` may rebuild an image on a dev machine
NAME = "lost"


def _train_pods(core: client.CoreV1Api, ns: str) -> list[Any]:
    pods = core.list_namespaced_pod(ns, label_selector=f"kiln.dev/run={NAME},kiln.dev/stage=train").items
    return [p for p in pods if not p.metadata.deletion_timestamp]


def _lose_node(cluster: Any, pod: Any) -> None:
    """Stop the node's kubelet, then kill the pod's containers in that node's containerd."""
    node = pod.spec.node_name
    kubelet = procs.read_pidfile(cluster.state_dir / "run" / f"kubelet-{node}.pid")
    assert kubelet is not None and procs.alive(kubelet), f"kubelet of {node} is not running"
    procs.stop(kubelet)
    sock = cluster.state_dir / "nodes" / node / "containerd.sock"
    for status in pod.status.container_statuses or []:
        cid = status.container_id.split("://", 1)[1]
        subprocess.run(["ctr", f"--address={sock}", "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", cid],
                       check=True, capture_output=True, timeout=30)


def _resumed_from(core: client.CoreV1Api, ns: str) -> int | None:
    """The step the new gang resumed from (the trainer logs `resumed from .../step-XXXXXXXX`)."""
    for pod in _train_pods(core, ns):
        if pod.status.phase != "Running":
            continue
        found = re.search(r"resumed from \S*step-(\d+)", pod_log(core, ns, pod.metadata.name))
        if found:
            return int(found.group(1))
    return None


def test_node_lost_mid_training_restarts_the_gang_from_the_last_commit(cluster: Any, s3_bucket: str,
                                                                      figure: Any) -> None:
    core = client.CoreV1Api(cluster.api)
    with run_namespace(cluster, "nodelost") as ns, operator(cluster, ns):
        create_run(cluster, ns, tiny_run(cluster, s3_bucket, name=NAME))
        committed = wait_for(lambda: int((get_run(cluster, ns, NAME).get("status", {}).get("progress") or {})
                                         .get("lastCommittedStep") or 0), 600, "a committed checkpoint")
        pods = _train_pods(core, ns)
        nodes = {p.spec.node_name for p in pods}
        assert len(pods) == 2 and len(nodes) == 2, f"want one training pod per node, got {[(p.metadata.name, p.spec.node_name) for p in pods]}"
        lost = max(pods, key=lambda p: p.metadata.name)  # the worker; the master keeps its node
        _lose_node(cluster, lost)
        t_lost = time.monotonic()
        try:
            wait_for(lambda: any(e.startswith("GangRestart") for e in events(cluster, ns, NAME)), 300,
                     "the operator's GangRestart after the node loss")
            detect_s = time.monotonic() - t_lost
        finally:
            devcluster("up", timeout=900)  # the node comes back whatever happened
        t_back = time.monotonic()
        resumed = wait_for(lambda: _resumed_from(core, ns), 420, "the new gang resuming from a checkpoint", interval=2)
        resume_s = time.monotonic() - t_back
        wait_for(lambda: phase(cluster, ns, NAME) in ("Succeeded", "Failed"), 600, "the run finished", interval=2)
        run = get_run(cluster, ns, NAME)
    restarts = run["status"].get("restarts") or {}
    figure(f"node lost (kubelet stopped, its training container killed) after commit {committed}: GangRestart "
           f"{detect_s:.0f} s after the loss; node back (`up`) then the new gang resumed from step {resumed} "
           f"{resume_s:.0f} s later; run {run['status']['phase']}, restarts {restarts}")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert resumed >= committed, f"resumed from {resumed}, but step {committed} was committed before the loss"
    assert sum(int(v) for v in restarts.values()) == 1, restarts
