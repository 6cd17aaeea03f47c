"""`down` leaves no process of the cluster behind (runs last: it stops the shared cluster)."""

from __future__ import annotations

import socket
import subprocess

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


@pytest.mark.cluster_last
@pytest.mark.timeout(180)
def test_down_leaves_no_process_behind(cluster: Cluster) -> None:
    # The cluster is up (the fixture saw to it), so these checks can fail if `down` misses something.
    assert _marked_pids(cluster), "no cluster process carries the KILN_CLUSTER marker before down"
    assert all(_listening(p) for p in PORTS.values())
    devcluster("down")
    assert _marked_pids(cluster) == []
    still = [name for name, port in PORTS.items() if _listening(port)]
    assert still == [], f"still listening after down: {still}"
    assert not list((cluster.state_dir / "run").glob("*.pid"))
    assert subprocess.run(["ip", "link", "show", "kiln0"], capture_output=True).returncode != 0
    status = devcluster("status")
    assert status.returncode != 0 and "down" in status.stdout
