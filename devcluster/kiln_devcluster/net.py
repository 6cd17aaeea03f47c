"""The host side of pod networking: the ``kiln0`` bridge.

The bridge's address (10.88.0.1) is the node's InternalIP, the pods' gateway
and the address pods reach host services on (API server, S3). The process node
attaches one veth per pod to it. Nothing here routes beyond this machine.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BridgeConfig:
    """The pod bridge."""

    name: str = "kiln0"
    """Linux interface name of the bridge."""
    address: str = "10.88.0.1/16"
    """Host address on the bridge, with the pod network's prefix length."""

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 15:
            raise ValueError(f"BridgeConfig.name must be 1-15 characters, got {self.name!r}")
        if "/" not in self.address:
            raise ValueError(f"BridgeConfig.address needs a prefix length, got {self.address!r}")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        # Typically: not root (CAP_NET_ADMIN is needed for the bridge).
        raise RuntimeError(f"ip {' '.join(args)} failed: {out.stderr.strip()}")
    return out


def bridge_exists(cfg: BridgeConfig = BridgeConfig()) -> bool:
    return _ip("link", "show", "dev", cfg.name, check=False).returncode == 0


def ensure_bridge(cfg: BridgeConfig = BridgeConfig()) -> None:
    """Create the bridge with its address, bring it up and enable IPv4 forwarding (idempotent)."""
    if not bridge_exists(cfg):
        _ip("link", "add", cfg.name, "type", "bridge")
    addrs = _ip("-o", "addr", "show", "dev", cfg.name).stdout
    if f" {cfg.address} " not in addrs:
        _ip("addr", "add", cfg.address, "dev", cfg.name)
    _ip("link", "set", cfg.name, "up")
    # Pods talk to each other through the bridge and to host services via its address.
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def remove_bridge(cfg: BridgeConfig = BridgeConfig()) -> None:
    """Delete the bridge if present (the pods' veths go with their namespaces)."""
    if bridge_exists(cfg):
        _ip("link", "del", cfg.name)


def ensure_node_addresses(ips: list[str], cfg: BridgeConfig = BridgeConfig()) -> None:
    """Add each extra node IP to the bridge as a /32 (the first node uses the bridge's own address).
    A /32 adds no second route for the pod network, so the primary address stays the pods' gateway."""
    primary = cfg.address.split("/")[0]
    addrs = _ip("-o", "addr", "show", "dev", cfg.name).stdout
    for ip in ips:
        if ip != primary and f" {ip}/32 " not in addrs:
            _ip("addr", "add", f"{ip}/32", "dev", cfg.name)


MASQ_CHAIN = "KILN-MASQ"


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)} failed: {out.stderr.strip()}")
    return out


def ensure_masquerade(pod_network: str, cfg: BridgeConfig = BridgeConfig()) -> None:
    """Pods reach beyond the bridge (CoreDNS to the host's resolver, package registries) with the
    host's address: one rule in a chain of ours, removed by `remove_masquerade`."""
    if _iptables("-t", "nat", "-L", MASQ_CHAIN, "-n", check=False).returncode != 0:
        _iptables("-t", "nat", "-N", MASQ_CHAIN)
    rule = ["-s", pod_network, "!", "-o", cfg.name, "-j", "MASQUERADE"]
    if _iptables("-t", "nat", "-C", MASQ_CHAIN, *rule, check=False).returncode != 0:
        _iptables("-t", "nat", "-A", MASQ_CHAIN, *rule)
    jump = ["-j", MASQ_CHAIN]
    if _iptables("-t", "nat", "-C", "POSTROUTING", *jump, check=False).returncode != 0:
        _iptables("-t", "nat", "-A", "POSTROUTING", *jump)


def remove_masquerade() -> None:
    _iptables("-t", "nat", "-D", "POSTROUTING", "-j", MASQ_CHAIN, check=False)
    _iptables("-t", "nat", "-F", MASQ_CHAIN, check=False)
    _iptables("-t", "nat", "-X", MASQ_CHAIN, check=False)
