"""What `down` removes after the real nodes' processes are gone, so nothing outlives the cluster.

In order, for every node folder under ``.kiln/nodes/`` (whatever ``KILN_NODES`` says now):
1. containers: while its containerd still runs, every task is killed and every
   container deleted (``remove_containers``, called before containerd stops);
2. processes left in the node's cgroup parent (a container whose shim died) are killed;
3. mounts below the node folder (container rootfs, sandbox shm, pod netns, kubelet
   volumes) are unmounted, deepest first — a netns goes, and its veth with it;
4. the node's cgroup parents are removed in every v1 hierarchy;
5. host-local IPAM records and the kubelet's ``/var/log/containers`` links.
Then, once for the machine: kube-proxy's and CNI's iptables chains and our masquerade rule.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from kiln_devcluster import net
from kiln_devcluster.nodes import NodeSpec
from kiln_devcluster.ociimage import ctr

CGROUP_V1 = Path("/sys/fs/cgroup")
CONTAINER_LOG_LINKS = Path("/var/log/containers")
OUR_CHAIN_PREFIXES = ("KUBE-", "CNI-", "KILN-")
"""Chains made by kube-proxy, the CNI plugins and net.py; nothing else on a dev machine uses these."""


def remove_containers(node: NodeSpec) -> int:
    """Kill and delete every task and container of the node's containerd (images stay). Returns the count."""
    sock = node.containerd_socket
    if not sock.exists():
        return 0
    tasks = [line.split()[0] for line in ctr("ctr", sock, "tasks", "ls").splitlines()[1:] if line.strip()]
    for task in tasks:
        try:
            ctr("ctr", sock, "tasks", "kill", "--signal", "SIGKILL", task, timeout_s=30)
        except RuntimeError:
            pass  # already stopped: only the delete below is left
    for task in tasks:
        _delete_task(sock, task)
    containers = ctr("ctr", sock, "containers", "ls", "-q").split()
    for cid in containers:
        ctr("ctr", sock, "containers", "delete", cid)
    return len(containers)


def _delete_task(sock: Path, task: str, timeout_s: float = 20.0) -> None:
    # A task only deletes once its processes are gone: retry until the kill has landed.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ctr("ctr", sock, "tasks", "delete", "--force", task, timeout_s=30)
            return
        except RuntimeError as err:
            if "not found" in str(err) or time.monotonic() > deadline:
                return
        time.sleep(0.2)


def cgroup_dirs(node: NodeSpec, root: Path = CGROUP_V1) -> list[Path]:
    """The node's cgroup parent in every mounted v1 hierarchy (those that exist)."""
    if not root.is_dir():
        return []
    rel = node.cgroup_parent.lstrip("/")
    return [h / rel for h in sorted(root.iterdir()) if (h / rel).is_dir() and not h.is_symlink()]


def ensure_cgroups(node: NodeSpec, root: Path = CGROUP_V1) -> None:
    """Create the cgroup parent in each hierarchy (the kubelet refuses a cgroupRoot that is missing).
    A new cpuset cgroup starts with no CPUs or memory nodes: copy the parent's."""
    rel = node.cgroup_parent.lstrip("/")
    for h in sorted(root.iterdir()):
        if h.is_symlink() or not (h / "cgroup.procs").exists():
            continue
        (h / rel).mkdir(exist_ok=True)
        if h.name == "cpuset":
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (h / rel / knob).write_text((h / knob).read_text())


def pods_rss_mib(node: NodeSpec, root: Path = CGROUP_V1) -> float:
    """Resident memory of every container below the node's cgroup parent (memory.stat total_rss)."""
    stat = root / "memory" / node.cgroup_parent.lstrip("/") / "memory.stat"
    try:
        fields = dict(line.split() for line in stat.read_text().splitlines())
    except OSError:
        return 0.0
    return int(fields.get("total_rss", 0)) / (1 << 20)


def kill_cgroup_processes(node: NodeSpec, root: Path = CGROUP_V1) -> int:
    """SIGKILL every process below the node's cgroup parent; returns how many there were."""
    pids: set[int] = set()
    for top in cgroup_dirs(node, root):
        for procs_file in top.rglob("cgroup.procs"):
            pids.update(int(p) for p in procs_file.read_text().split())
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def remove_cgroups(node: NodeSpec, root: Path = CGROUP_V1, timeout_s: float = 10.0) -> None:
    """rmdir the cgroup trees bottom-up (a cgroup with a dying process is busy for a moment)."""
    deadline = time.monotonic() + timeout_s
    for top in cgroup_dirs(node, root):
        for d in sorted((p for p in [top, *top.rglob("*")] if p.is_dir()), key=lambda p: -len(p.parts)):
            while d.exists():
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cgroup {d} still busy after {timeout_s:.0f}s") from None
                    time.sleep(0.1)


def mounts_below(folder: Path, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below ``folder``, deepest first (field 5 of /proc/self/mountinfo, octal-escaped)."""
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    prefix = str(folder).rstrip("/")
    points = []
    for line in text.splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def unmount_below(folder: Path) -> int:
    points = mounts_below(folder)
    for point in points:
        # Lazy: a mount still referenced (an open netns file) is detached now and freed when released.
        subprocess.run(["umount", "--lazy", point], capture_output=True)
    return len(points)


def remove_log_links(node: NodeSpec, links: Path = CONTAINER_LOG_LINKS) -> None:
    if not links.is_dir():
        return
    for link in links.iterdir():
        if link.is_symlink() and os.readlink(link).startswith(str(node.pod_logs) + "/"):
            link.unlink()


def clean_node(node: NodeSpec) -> list[str]:
    """Steps 2-5 for one node (its containerd and kubelet are stopped); returns what it did."""
    done = []
    if killed := kill_cgroup_processes(node):
        done.append(f"killed {killed} leftover container processes")
    if unmounted := unmount_below(node.state):
        done.append(f"unmounted {unmounted} mounts")
    remove_cgroups(node)
    shutil.rmtree(node.ipam_dir, ignore_errors=True)
    remove_log_links(node)
    return done


def our_chain_rules(save_output: str) -> tuple[list[list[str]], list[str]]:
    """From ``iptables-save -t <table>``: (rules of built-in chains that jump to our chains, our chains)."""
    chains, rules = [], []
    for line in save_output.splitlines():
        if line.startswith(":") and line[1:].split()[0].startswith(OUR_CHAIN_PREFIXES):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            parts = shlex.split(line)  # comments are quoted: "kubernetes service portals"
            if not parts[1].startswith(OUR_CHAIN_PREFIXES) and "-j" in parts and \
                    parts[parts.index("-j") + 1].startswith(OUR_CHAIN_PREFIXES):
                rules.append(parts[1:])
    return rules, chains


def remove_iptables_chains() -> int:
    """Delete our chains from every table, for IPv4 and IPv6; returns how many chains went."""
    net.remove_masquerade()
    removed = 0
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle", "raw"):
            saved = subprocess.run([f"{tool}-save", "-t", table], capture_output=True, text=True)
            rules, chains = our_chain_rules(saved.stdout)
            for rule in rules:
                subprocess.run([tool, "-w", "5", "-t", table, "-D", *rule], capture_output=True)
            for chain in chains:
                subprocess.run([tool, "-w", "5", "-t", table, "-F", chain], capture_output=True)
            for chain in chains:
                if subprocess.run([tool, "-w", "5", "-t", table, "-X", chain], capture_output=True).returncode == 0:
                    removed += 1
    return removed
