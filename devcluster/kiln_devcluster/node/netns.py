"""Pod network sandboxes: a network namespace with a veth pair on the node bridge.

Addresses come from the bridge's /16 (the bridge itself is .1). The allocator hands addresses out
round-robin so a just-freed address is not reused at once (stale /etc/hosts lines and TIME_WAIT
sockets would otherwise point at the wrong pod).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import subprocess
import threading
from pathlib import Path

log = logging.getLogger(__name__)
NETNS_DIR = Path("/run/netns")
NS_PREFIX = "kiln-"


class AddressPoolExhausted(Exception):
    """Every address of the pod network is in use."""


class IPAllocator:
    """Round-robin allocator over a subnet, skipping network, broadcast and the gateway."""

    def __init__(self, cidr: str, gateway: str) -> None:
        self._net = ipaddress.ip_network(cidr)
        self._skip = {self._net.network_address, self._net.broadcast_address, ipaddress.ip_address(gateway)}
        self._used: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        self._next = int(self._net.network_address) + 1
        self._lock = threading.Lock()

    def allocate(self) -> str:
        with self._lock:
            size = self._net.num_addresses
            base = int(self._net.network_address)
            for _ in range(size):
                candidate = ipaddress.ip_address(self._next)
                self._next = base + ((self._next - base + 1) % size)
                if candidate not in self._skip and candidate not in self._used:
                    self._used.add(candidate)
                    return str(candidate)
        raise AddressPoolExhausted(f"no free address left in {self._net}")

    def reserve(self, ip: str) -> None:
        with self._lock:
            self._used.add(ipaddress.ip_address(ip))

    def release(self, ip: str) -> None:
        with self._lock:
            self._used.discard(ipaddress.ip_address(ip))


def netns_name(pod_uid: str) -> str:
    return NS_PREFIX + pod_uid


def veth_name(pod_uid: str) -> str:
    """Host-side interface name: at most 15 characters, stable per pod."""
    return "kv" + hashlib.sha1(pod_uid.encode()).hexdigest()[:12]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def create_sandbox(pod_uid: str, ip: str, prefix_len: int, gateway: str, bridge: str) -> str:
    """Create netns + veth for a pod (idempotent: an old one of the same pod is replaced)."""
    ns, veth = netns_name(pod_uid), veth_name(pod_uid)
    delete_sandbox(pod_uid)
    _ip("netns", "add", ns)
    _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("link", "set", veth, "master", bridge, "up")
    _ip("-n", ns, "addr", "add", f"{ip}/{prefix_len}", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "route", "add", "default", "via", gateway)
    return str(NETNS_DIR / ns)


def delete_sandbox(pod_uid: str) -> None:
    """Remove the pod's netns (its eth0 goes with it, and the veth peer with that)."""
    ns = netns_name(pod_uid)
    if (NETNS_DIR / ns).exists():
        _ip("netns", "del", ns, check=False)
    _ip("link", "del", veth_name(pod_uid), check=False)


def leftover_sandboxes() -> list[str]:
    """Pod UIDs whose netns survived an earlier node process (cleaned at start)."""
    if not NETNS_DIR.exists():
        return []
    return [p.name[len(NS_PREFIX):] for p in NETNS_DIR.iterdir() if p.name.startswith(NS_PREFIX)]


def bridge_exists(bridge: str) -> bool:
    return _ip("link", "show", bridge, check=False).returncode == 0
