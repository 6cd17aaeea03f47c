"""Pods on the real nodes (kubelet + containerd + runc): what only a real runtime enforces,
and the kubelet's streaming APIs (logs, exec, port-forward). Skipped on the process node."""

from __future__ import annotations

import re
import subprocess
import urllib.request
import uuid

import pytest
from kubernetes import client
from nodekit import (
    busybox_pod,
    exit_code,
    namespace,
    page_server,
    pod_log,
    real_node_names,
    wait_phase,
    wait_ready,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def core(cluster):
    real_node_names(cluster)
    return client.CoreV1Api(cluster.api)


@pytest.fixture
def ns(core):
    with namespace(core, "real") as name:
        yield name


def _terminated(p: dict) -> dict:
    (st,) = p["status"]["containerStatuses"]
    return st["state"]["terminated"]


def test_nodes_run_containerd_and_are_ready(cluster):
    out = cluster.kubectl("get", "nodes", "-o", "wide").stdout
    names = real_node_names(cluster)
    for name in names:
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert " Ready " in line and "containerd://" in line, line


def test_non_root_pod_with_read_only_root_cannot_write_root(core, ns):
    script = "id -u; if touch /probe 2>/dev/null; then echo WROTE-ROOT; else echo ROOT-READ-ONLY; fi; touch /scratch/ok"
    manifest = busybox_pod(
        "ro", script,
        securityContext={"runAsUser": 65534, "runAsNonRoot": True, "readOnlyRootFilesystem": True,
                         "allowPrivilegeEscalation": False},
        volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
    )
    manifest["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    core.create_namespaced_pod(ns, manifest)
    p = wait_phase(core, ns, "ro", ("Succeeded", "Failed"), 120)
    log = pod_log(core, ns, "ro")
    assert log.split() == ["65534", "ROOT-READ-ONLY"], log
    # The emptyDir stays writable for the same user: the failure above is the read-only root, not the user.
    assert p["status"]["phase"] == "Succeeded", p["status"]


def test_memory_limit_is_enforced_by_the_cgroup(core, ns):
    # dd allocates its block in one piece and fills it: 96 MiB against a 32 MiB limit.
    manifest = busybox_pod("hog", "exec dd if=/dev/zero of=/dev/null bs=96M count=1",
                           resources={"limits": {"memory": "32Mi"}, "requests": {"memory": "32Mi"}})
    core.create_namespaced_pod(ns, manifest)
    p = wait_phase(core, ns, "hog", ("Succeeded", "Failed"), 120)
    term = _terminated(p)
    assert term["reason"] == "OOMKilled" and term["exitCode"] == 137, term
    assert p["status"]["phase"] == "Failed"


def test_termination_message_reaches_the_pod_status(core, ns):
    note = f"bye-{uuid.uuid4().hex[:8]}"
    core.create_namespaced_pod(ns, busybox_pod("note", f"echo {note} > /dev/termination-log; exit 3"))
    p = wait_phase(core, ns, "note", ("Succeeded", "Failed"), 120)
    term = _terminated(p)
    assert (term["exitCode"], term["message"].strip()) == (3, note), term
    assert exit_code(p) == 3


def test_logs_exec_and_port_forward_go_through_the_kubelet(cluster, core, ns):
    text = f"page-{uuid.uuid4().hex[:8]}"
    core.create_namespaced_pod(ns, page_server("web", text))
    wait_ready(core, ns, "web")
    exec_out = cluster.kubectl("exec", "-n", ns, "web", "--", "sh", "-c", "echo $((6*7)); cat /www/index.html")
    assert exec_out.stdout.split() == ["42", text]
    cluster.kubectl("exec", "-n", ns, "web", "--", "sh", "-c", "echo logged-line > /proc/1/fd/1")
    assert "logged-line" in cluster.kubectl("logs", "-n", ns, "web").stdout
    forward = subprocess.Popen(
        [str(cluster.bin / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", "-n", ns, "port-forward", "pod/web",
         ":8080"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert forward.stdout is not None
        first = forward.stdout.readline()  # "Forwarding from 127.0.0.1:NNNNN -> 8080"
        match = re.search(r"127\.0\.0\.1:(\d+)", first)
        assert match, first
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/", timeout=10) as resp:
            assert resp.read().decode().strip() == text
    finally:
        forward.terminate()
        forward.wait(10)
