"""Start a container as a local process in the pod's network namespace and a private mount namespace.

The process tree is ``nsenter --net=<pod netns> unshare --mount --uts --propagation private
/bin/sh launch.sh ARGV...``; each step execs the next, so the recorded pid is the container's
own process (its process group is what deletion signals). ``launch.sh`` bind-mounts the volumes
and the pod's /etc/hosts, sets the hostname, changes to the working directory and execs ARGV.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln_devcluster.node.envresolve import ConfigError


@dataclass(frozen=True)
class Mount:
    """One bind mount of the container's mount namespace."""

    source: Path
    """Host path (a volume folder, a file in it, or the pod's hosts file)."""
    target: str
    """Absolute path seen by the container."""
    read_only: bool = False
    """Remount read-only after binding."""


def plan_mounts(container: Mapping[str, Any], volume_paths: Mapping[str, Path], hosts_file: Path) -> list[Mount]:
    """The container's volumeMounts as Mounts (parents before children), then /etc/hosts and resolv.conf."""
    mounts = []
    for vm in container.get("volumeMounts") or []:
        if vm["name"] not in volume_paths:
            raise ConfigError(f'volumeMounts {vm["mountPath"]}: no volume named "{vm["name"]}" in the pod')
        if not vm["mountPath"].startswith("/"):
            raise ConfigError(f'volumeMounts.mountPath {vm["mountPath"]!r} must be absolute')
        source = volume_paths[vm["name"]]
        if vm.get("subPath"):
            source = source / vm["subPath"]
            if not source.exists():
                # The kubelet creates a missing subPath as a folder.
                source.mkdir(parents=True, exist_ok=True)
        mounts.append(Mount(source, vm["mountPath"].rstrip("/") or "/", bool(vm.get("readOnly"))))
    mounts.append(Mount(hosts_file, "/etc/hosts", False))
    resolv = hosts_file.with_name("resolv.conf")
    if resolv.exists():
        mounts.append(Mount(resolv, "/etc/resolv.conf", True))
    return order_mounts(mounts)


def split_shadowing(mounts: list[Mount], runtime_roots: Sequence[Path]) -> tuple[list[Mount], list[Mount]]:
    """(mounts to make, mounts that would hide the node's own runtime).

    A container here runs the project's venv and reads the node's state folder from the host. A
    volume mounted over an ancestor of those (an emptyDir at /tmp while the checkout is in /tmp)
    would hide the interpreter itself, so such a mount is not made; the caller points TMPDIR at the
    volume instead, which is what programs use /tmp for.
    """
    kept, dropped = [], []
    for m in mounts:
        hides = any(_under(str(root), m.target) for root in runtime_roots)
        (dropped if hides else kept).append(m)
    return kept, dropped


def _under(path: str, ancestor: str) -> bool:
    return ancestor == "/" or path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


def order_mounts(mounts: list[Mount]) -> list[Mount]:
    """Parents before children, and every mount before one that would hide its source.

    The sources live in the node's state folder on the host. When that folder is below a path a
    container mounts over (an emptyDir at /tmp while the checkout sits in /tmp), binding /tmp first
    would hide the sources of the later mounts, so those are bound first.
    """
    pending = sorted(mounts, key=lambda m: m.target.count("/"))
    ordered: list[Mount] = []
    while pending:
        for i, m in enumerate(pending):
            others = pending[:i] + pending[i + 1 :]
            parent_waiting = any(o.target != m.target and _under(m.target, o.target) for o in others)
            hides_a_source = any(_under(str(o.source), m.target) and not _under(o.target, m.target) for o in others)
            if not parent_waiting and not hides_a_source:
                ordered.append(pending.pop(i))
                break
        else:  # conflicting constraints: fall back to depth order for the rest
            ordered.extend(pending)
            break
    return ordered


def render_script(mounts: Sequence[Mount], hostname: str, workdir: str) -> str:
    """The shell script run inside the new mount/UTS namespace before exec'ing the container."""
    q = shlex.quote
    lines = ["set -e"]
    for m in mounts:
        if m.source.is_file():
            lines.append(f"/usr/bin/mkdir -p {q(str(Path(m.target).parent))}")
            lines.append(f"[ -e {q(m.target)} ] || /usr/bin/touch {q(m.target)}")
        else:
            lines.append(f"/usr/bin/mkdir -p {q(m.target)}")
        lines.append(f"/usr/bin/mount --bind {q(str(m.source))} {q(m.target)}")
        if m.read_only:
            lines.append(f"/usr/bin/mount -o remount,bind,ro {q(m.target)}")
    lines.append(f"/usr/bin/hostname {q(hostname)}")
    if workdir:
        lines.append(f"/usr/bin/mkdir -p {q(workdir)}")
        lines.append(f"cd {q(workdir)}")
    lines.append('exec "$@"')
    return "\n".join(lines) + "\n"


def missing_root(target: str) -> Path | None:
    """The top-most ancestor of ``target`` (or itself) that does not exist on the host yet.

    There is no container root filesystem, so a mount point has to be created on the host; the node
    remembers what it created and removes it (when empty) once the pod is gone.
    """
    path, root = Path(target), None
    while not path.exists():
        root, path = path, path.parent
    return root


def remove_created(target: str, root: Path) -> None:
    """Remove ``target`` and its parents up to ``root`` where they are empty (best effort)."""
    path = Path(target)
    while True:
        try:
            if path.is_file() and path.stat().st_size == 0:
                path.unlink()
            else:
                path.rmdir()
        except OSError:
            return  # not empty, still mounted somewhere, or already gone
        if path == root or path == path.parent:
            return
        path = path.parent


def namespace_prefix(netns_path: str | None) -> list[str]:
    """argv prefix entering the pod's netns (none for hostNetwork pods) and new mount+UTS namespaces."""
    enter = ["/usr/bin/nsenter", f"--net={netns_path}", "--"] if netns_path else []
    return enter + ["/usr/bin/unshare", "--mount", "--uts", "--propagation", "private", "--"]


def start(script: Path, argv: Sequence[str], env: Mapping[str, str], netns_path: str | None,
          log_file: Path) -> subprocess.Popen[bytes]:
    """Start the container process in its own session (so the whole group can be signalled)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab", buffering=0) as out:
        return subprocess.Popen(
            [*namespace_prefix(netns_path), "/bin/sh", str(script), *argv],
            env=dict(env), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd="/",
        )


def exec_in(pid: int, argv: Sequence[str], env: Mapping[str, str], timeout: float) -> tuple[int, str]:
    """Run ``argv`` inside the namespaces of process ``pid`` (exec probes); returns (code, output)."""
    cmd = ["/usr/bin/nsenter", f"--target={pid}", "--net", "--mount", "--uts", "--", *argv]
    try:
        proc = subprocess.run(cmd, env=dict(env), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout}s"
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")[-1000:]
