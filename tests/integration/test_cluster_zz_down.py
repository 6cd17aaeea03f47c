"""`down` leaves no process of the cluster behind (runs last: it stops the shared cluster)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
from clusterlib import Cluster, devcluster

PORTS = {"etcd": 2379, "kube-apiserver": 6443, "s3": 9000}


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _marked_pids(cluster: Cluster) -> list[int]:
    needle = f"KILN_CLUSTER={cluster.state_dir}".encode()
    out = subprocess.run(["sh", "-c", "ls -d /proc/[0-9]*"], capture_output=True, text=True, check=True)
    pids = []
    for entry in out.stdout.split():
        try:
            with open(f"{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    pids.append(int(entry.rsplit("/", 1)[1]))
        except OSError:
            continue
    return pids


def _real_node_leftovers(cluster: Cluster) -> dict[str, list[str]]:
    """What real nodes could leave on the host: mounts (rootfs, shm, netns, volumes) below the state
    dir, kube-proxy/CNI/masquerade iptables chains, node cgroups, containerd shims of our sockets."""
    state = str(cluster.state_dir)
    mounts = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
              if ln.split()[4].startswith(state + "/")]
    saved = "".join(subprocess.run([t], capture_output=True, text=True).stdout
                    for t in ("iptables-save", "ip6tables-save"))
    chains = re.findall(r"^:((?:KUBE|CNI|KILN)-\S+)", saved, re.M)
    cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob("*/kiln-node-*")]
    shims = subprocess.run(["pgrep", "-af", f"containerd-shim.*{state}"], capture_output=True, text=True).stdout
    return {"mounts": mounts, "iptables chains": chains, "cgroups": cgroups, "shims": shims.splitlines()}


def _runs_real_nodes(cluster: Cluster) -> bool:
    return "containerd://" in cluster.kubectl("get", "nodes", "-o", "wide").stdout


@pytest.mark.cluster_last
@pytest.mark.timeout(180)
def test_down_leaves_no_process_behind(cluster: Cluster) -> None:
    # The cluster is up (the fixture saw to it), so these checks can fail if `down` misses something.
    assert _marked_pids(cluster), "no cluster process carries the KILN_CLUSTER marker before down"
    assert all(_listening(p) for p in PORTS.values())
    real = _runs_real_nodes(cluster)
    if real:
        # A running pod makes every kind of leftover exist before `down`, so the check below can fail.
        cluster.kubectl("run", "leftover", "--image=kiln.local/busybox:1.35", "--image-pull-policy=Never",
                        "--restart=Never", "--", "sleep", "600")
        cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Running", "pod/leftover", "--timeout=90s", timeout=100)
        before = _real_node_leftovers(cluster)
        assert before["mounts"] and before["iptables chains"] and before["cgroups"] and before["shims"], before
    devcluster("down")
    if real:
        assert _real_node_leftovers(cluster) == {"mounts": [], "iptables chains": [], "cgroups": [], "shims": []}
        # Imported images stay in the machine-wide cache for the next `up` (no registry to pull from).
        cache = Path(os.environ.get("KILN_CACHE", Path.home() / ".cache" / "kiln")) / "containerd"
        blobs = list(cache.glob("kiln-node-0/io.containerd.content.v1.content/blobs/sha256/*"))
        assert blobs, f"no image content left under {cache}"
    assert _marked_pids(cluster) == []
    still = [name for name, port in PORTS.items() if _listening(port)]
    assert still == [], f"still listening after down: {still}"
    assert not list((cluster.state_dir / "run").glob("*.pid"))
    assert subprocess.run(["ip", "link", "show", "kiln0"], capture_output=True).returncode != 0
    status = devcluster("status")
    assert status.returncode != 0 and "down" in status.stdout
