"""The real nodes of the dev cluster: how many, their names, addresses and folders.

Each node is a kubelet with a containerd of its own. All of them share the host's
network namespace and the pod bridge ``kiln0``, so they differ only in what can
collide on one machine:

- the node IP (the kubelet binds its API and healthz there, so every node uses the
  standard ports): node 0 is the bridge's primary address 10.88.0.1, node i is
  10.88.0.<i+1>, added to the bridge as a /32;
- the pod address range inside 10.88.0.0/16: node i allocates from 10.88.<i+1>.0/24;
- the cgroup parent (``/kiln-node-<i>``), so the kubelets' QoS cgroups never meet;
- the kubelet root dir, containerd state and socket (``.kiln/nodes/<name>/``) and
  the containerd root with its images (``~/.cache/kiln/containerd/<name>/``, kept
  across `down` and shared by checkouts, so imported images survive).

``KILN_NODES`` (1 or 2, default 2) picks the count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kiln_devcluster.paths import StatePaths

MAX_NODES = 2
POD_NETWORK = "10.88.0.0/16"
BRIDGE_GATEWAY = "10.88.0.1"
CLUSTER_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248


@dataclass(frozen=True)
class NodeSpec:
    """One real node: a kubelet and its containerd."""

    index: int
    """0-based position; everything else derives from it."""
    state: Path
    """This node's runtime folder in the checkout (``.kiln/nodes/<name>``)."""
    cache: Path
    """This node's containerd root (images, snapshots) in the machine-wide cache."""

    def __post_init__(self) -> None:
        if not 0 <= self.index < MAX_NODES:
            raise ValueError(f"NodeSpec.index must be in [0, {MAX_NODES}), got {self.index}")

    @property
    def name(self) -> str:
        return f"kiln-node-{self.index}"

    @property
    def ip(self) -> str:
        """The node's InternalIP on the bridge; the kubelet listens here."""
        return f"10.88.0.{self.index + 1}"

    @property
    def pod_subnet(self) -> str:
        """The slice of the pod network this node's IPAM hands out."""
        return f"10.88.{self.index + 1}.0/24"

    @property
    def cgroup_parent(self) -> str:
        """The kubelet's cgroupRoot: its kubepods hierarchy lives below it."""
        return f"/{self.name}"

    @property
    def containerd_socket(self) -> Path:
        return self.state / "containerd.sock"

    @property
    def containerd_state(self) -> Path:
        """containerd's state dir: task bundles, rootfs mounts, pod netns (``netns_mounts_under_state_dir``)."""
        return self.state / "containerd"

    @property
    def containerd_config(self) -> Path:
        return self.state / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state / "cni"

    @property
    def ipam_dir(self) -> Path:
        """host-local IPAM's allocation records (removed on `down`: no pod outlives it)."""
        return self.state / "ipam"

    @property
    def kubelet_root(self) -> Path:
        """kubelet's --root-dir: pod volumes, plugin and device-plugin sockets."""
        return self.state / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.state / "kubelet.yaml"

    @property
    def pod_logs(self) -> Path:
        """kubelet's podLogsDir (``/var/log/pods`` on a normal node)."""
        return self.state / "pod-logs"

    def ensure(self) -> None:
        for d in (self.state, self.cache, self.containerd_state, self.cni_conf_dir, self.ipam_dir,
                  self.kubelet_root, self.pod_logs):
            d.mkdir(parents=True, exist_ok=True)


def node_mode() -> str:
    """Always ``real`` (kubelet + containerd); ``KILN_NODE=process`` named a Python stand-in that is gone."""
    mode = os.environ.get("KILN_NODE", "real")
    if mode != "real":
        raise ValueError(f"KILN_NODE={mode!r}: the process node is gone, every node is a real kubelet "
                         "with containerd; unset KILN_NODE")
    return mode


def node_count() -> int:
    raw = os.environ.get("KILN_NODES", str(MAX_NODES))
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_NODES:
        raise ValueError(f"KILN_NODES must be an integer from 1 to {MAX_NODES}, got {raw!r}")
    return count


def cache_root() -> Path:
    return Path(os.environ.get("KILN_CACHE", str(Path.home() / ".cache" / "kiln")))


def node_specs(paths: StatePaths, count: int | None = None) -> list[NodeSpec]:
    """The cluster's real nodes (``count`` defaults to ``KILN_NODES``)."""
    n = node_count() if count is None else count
    return [
        NodeSpec(index=i, state=paths.root / "nodes" / f"kiln-node-{i}",
                 cache=cache_root() / "containerd" / f"kiln-node-{i}")
        for i in range(n)
    ]
