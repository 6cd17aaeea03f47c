"""Settings of the process node (one typed object, filled from the command line)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from kiln_devcluster.node.images import DEFAULT_IMAGES_FILE, REPO_ROOT


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node needs to know about itself."""

    name: str = "kiln-node-0"
    """Node object name; pods with this spec.nodeName run here."""
    kubeconfig: str = str(REPO_ROOT / ".kiln" / "kubeconfig")
    """Admin kubeconfig the node talks to the API server with."""
    node_ip: str = "10.88.0.1"
    """InternalIP of the Node: the bridge address, pods' gateway, kubelet API address."""
    bridge: str = "kiln0"
    """Linux bridge the pods' veths are attached to."""
    pod_cidr: str = "10.88.0.0/16"
    """Pod addresses are allocated from here (the node IP excluded)."""
    cpu: str = "16"
    """Advertised cpu capacity (requests are only accounted by the scheduler)."""
    memory: str = "64Gi"
    """Advertised memory capacity."""
    pods: int = 110
    """Advertised pod capacity."""
    gpus: int = 2
    """Advertised nvidia.com/gpu capacity, so GPU-requesting PyTorchJobs schedule."""
    kubelet_port: int = 10250
    """Port of the kubelet API (logs) on node_ip."""
    state_dir: Path = REPO_ROOT / ".kiln" / "node"
    """Pod folders (volumes, hosts, logs), kubelet certificate."""
    pki_dir: Path = REPO_ROOT / ".kiln" / "pki"
    """Cluster CA (ca.crt/ca.key) used to sign the kubelet serving certificate when present."""
    images_file: Path = DEFAULT_IMAGES_FILE
    """Image -> runtime rules."""
    backoff_initial: float = 10.0
    """First crash-loop back-off in seconds (kubelet: 10)."""
    backoff_max: float = 300.0
    """Longest crash-loop back-off in seconds (kubelet: 300)."""
    lease_seconds: int = 40
    """Node lease duration; renewed every quarter of it."""
    extra_labels: dict[str, str] = field(default_factory=dict)
    """Additional Node labels."""

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.pod_cidr)
        if ipaddress.ip_address(self.node_ip) not in net:
            raise ValueError(f"node_ip {self.node_ip} is not inside pod_cidr {self.pod_cidr}")
        if self.gpus < 0 or self.pods < 1:
            raise ValueError("gpus must be >= 0 and pods >= 1")
        if not 0 < self.kubelet_port < 65536:
            raise ValueError(f"kubelet_port {self.kubelet_port} out of range")
        if self.lease_seconds < 4:
            raise ValueError("lease_seconds must be >= 4")

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.pod_cidr).prefixlen

    def pod_dir(self, uid: str) -> Path:
        return self.state_dir / self.name / "pods" / uid
