"""Config files of a real node: containerd, CNI, kubelet, and the one kube-proxy.

Pure functions of a ``NodeSpec`` (tested without a cluster); `realnode.py`
writes them. Each non-default value carries the reason it is set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kiln_devcluster.nodes import (
    BRIDGE_GATEWAY,
    CLUSTER_DNS_IP,
    CLUSTER_DOMAIN,
    KUBELET_HEALTHZ_PORT,
    KUBELET_PORT,
    POD_NETWORK,
    NodeSpec,
)

CNI_BIN_DIR = "/usr/lib/cni"
"""Where Debian's containernetworking-plugins put bridge, host-local, portmap, loopback."""
PAUSE_IMAGE = "kiln.local/pause:3.10-kiln1"
"""The sandbox image (devcluster/build/pause), imported into every node's containerd by `up`."""
BRIDGE = "kiln0"
KUBE_PROXY_HEALTHZ = "127.0.0.1:10256"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string for our values


def _toml(tables: dict[str, dict[str, object]], top: dict[str, object]) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"  {k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def containerd_toml(node: NodeSpec) -> str:
    """containerd's config (version 2): own root, state and socket, CRI set up for this VM."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return _toml(
        top={
            "version": 2,
            "root": str(node.cache),
            "state": str(node.containerd_state),
            # Snapshotters that cannot work here only fill the log with errors.
            "disabled_plugins": [
                "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
            ],
        },
        tables={
            "grpc": {"address": str(node.containerd_socket)},
            "ttrpc": {"address": f"{node.containerd_socket}.ttrpc"},
            # The default (127.0.0.1:1338-ish, off) is fine, but two instances must never share one.
            "metrics": {"address": ""},
            cri: {
                "sandbox_image": PAUSE_IMAGE,
                # runc cannot write oom_score_adj below the shim's own value in this VM
                # (no CAP_SYS_RESOURCE): without this every pod sandbox fails to start.
                "restrict_oom_score_adj": True,
                # Pod network namespaces under our state dir, so `down` finds every one of them.
                "netns_mounts_under_state_dir": True,
                "enable_selinux": False,
                "disable_apparmor": True,
            },
            f"{cri}.containerd": {"snapshotter": "overlayfs", "default_runtime_name": "runc"},
            f"{cri}.containerd.runtimes.runc": {"runtime_type": "io.containerd.runc.v2"},
            # The kubelets use the cgroupfs driver (no systemd in this machine's containers).
            f"{cri}.containerd.runtimes.runc.options": {"SystemdCgroup": False},
            f"{cri}.cni": {"bin_dir": CNI_BIN_DIR, "conf_dir": str(node.cni_conf_dir), "max_conf_num": 1},
            # Only locally imported images exist: no registry mirrors, no credentials.
            f"{cri}.registry": {"config_path": ""},
            'plugins."io.containerd.internal.v1.opt"': {"path": str(node.cache / "opt")},
        },
    )


def cni_conflist(node: NodeSpec) -> dict[str, Any]:
    """bridge + host-local + portmap on the shared bridge, from this node's slice of the pod network.

    The bridge plugin does not manage the bridge's addresses (``isGateway: false``):
    `up` owns them (one per node). Pods still get the default route via the gateway
    from IPAM, and egress is masqueraded by one rule of our own (net.py), not per pod.
    """
    return {
        "cniVersion": "1.0.0",
        "name": "kiln",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": False,
                "ipMasq": False,
                # A pod reaching its own Service's ClusterIP is sent back out of its own port.
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(node.ipam_dir),
                    "ranges": [[{"subnet": POD_NETWORK, "gateway": BRIDGE_GATEWAY,
                                 "rangeStart": _host(node.pod_subnet, 2), "rangeEnd": _host(node.pod_subnet, 254)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _host(subnet: str, last: int) -> str:
    base = subnet.split("/")[0].rsplit(".", 1)[0]
    return f"{base}.{last}"


def kubelet_config(node: NodeSpec, ca_crt: Path, resolv_conf: str = "/etc/resolv.conf") -> dict[str, Any]:
    """The KubeletConfiguration: facts of this VM (cgroup v1, swap, no CAP_SYS_RESOURCE) and
    the sharing of one machine between nodes (own IP, cgroup parent, log dir)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.ip,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": node.ip,
        "healthzPort": KUBELET_HEALTHZ_PORT,
        # Only the API server (a client certificate from the cluster CA) talks to the kubelet.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(ca_crt)}},
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{node.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup_parent,
        # This machine kind runs cgroup v1 (deprecated, refused unless allowed) and may have swap.
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [CLUSTER_DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": resolv_conf,
        "podLogsDir": str(node.pod_logs),
        # No registry: an image GC would delete imported images that nothing can pull back.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # The disk is shared with builds; evict only when it is really full.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1Gi", "imagefs.available": "1Gi",
                         "nodefs.inodesFree": "2%"},
        "serializeImagePulls": False,
        # No systemd-logind here: graceful node shutdown cannot take an inhibitor lock.
        "shutdownGracePeriod": "0s",
        "shutdownGracePeriodCriticalPods": "0s",
        "registerNode": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


def kubelet_argv(node: NodeSpec, kubelet: Path, kubeconfig: Path) -> list[str]:
    return [
        str(kubelet), f"--config={node.kubelet_config}", f"--kubeconfig={kubeconfig}",
        f"--hostname-override={node.name}", f"--node-ip={node.ip}", f"--root-dir={node.kubelet_root}",
        f"--cert-dir={node.kubelet_root / 'pki'}", "--v=1",
    ]


def kube_proxy_config(kubeconfig: Path, node_name: str) -> dict[str, Any]:
    """One kube-proxy for the whole machine: every node shares the host's netns and iptables."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node_name,
        "mode": "iptables",
        "clusterCIDR": POD_NETWORK,
        "healthzBindAddress": KUBE_PROXY_HEALTHZ,
        "metricsBindAddress": "127.0.0.1:10249",
        # Leave the host's conntrack sysctls alone (a VM may refuse them; defaults are fine here).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        # Programme a new Service at once rather than batching changes for a second.
        "iptables": {"minSyncPeriod": "0s", "syncPeriod": "30s"},
    }
