"""SIGTERM to the process node stops every pod process and removes its netns and ClusterIP addresses;
the restarted node runs the pods again. (Named zz: it restarts the shared node, so it runs after the
other node tests.)"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from clusterlib import devcluster
from kubernetes import client
from nodekit import namespace, pod, read_pod, wait_phase
from waiting import wait_for

pytestmark = pytest.mark.timeout(240)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def test_node_sigterm_cleans_up_and_restart_recovers(cluster):
    if "containerd://" in cluster.kubectl("get", "nodes", "-o", "wide").stdout:
        pytest.skip("process node only (real nodes: test_cluster_zz_down.py checks their clean-up)")
    core = client.CoreV1Api(cluster.api)
    with namespace(core, "restart") as ns:
        core.create_namespaced_pod(ns, pod("sleeper", ["sleep", "600"], image="busybox", restart="Always"))
        core.create_namespaced_service(ns, {"metadata": {"name": "sleeper"}, "spec": {
            "selector": {"test": "sleeper"}, "ports": [{"port": 8080}]}})
        p = wait_phase(core, ns, "sleeper", ("Running",), 60)
        container_pid = int(p["status"]["containerStatuses"][0]["containerID"].split("//")[1])
        cluster_ip = core.read_namespaced_service("sleeper", ns).spec.cluster_ip
        netns = f"kiln-{p['metadata']['uid']}"
        wait_for(lambda: f"{cluster_ip}/32" in _ip("addr", "show", "lo"), 30, "ClusterIP on lo")
        assert netns in _ip("netns", "list") and _alive(container_pid)

        node_pid = int((cluster.state_dir / "run" / "node.pid").read_text().split()[0])
        os.kill(node_pid, signal.SIGTERM)
        wait_for(lambda: not _alive(node_pid), 60, "the node process to exit after SIGTERM")
        assert not _alive(container_pid), "a container process outlived the node"
        assert "kiln-" not in _ip("netns", "list")
        assert f"{cluster_ip}/32" not in _ip("addr", "show", "lo")

        devcluster("up")
        def restarted():
            st = read_pod(core, ns, "sleeper")["status"]
            cs = (st.get("containerStatuses") or [{}])[0]
            return st.get("phase") == "Running" and "running" in cs.get("state", {}) and \
                cs.get("containerID") != f"kiln://{container_pid}"
        wait_for(restarted, 60, "the pod running again on the restarted node")
        wait_for(lambda: f"{cluster_ip}/32" in _ip("addr", "show", "lo"), 30, "ClusterIP back on lo")
