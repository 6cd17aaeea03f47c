"""Host processes of the embedded cluster: start with a pid file, find, stop.

Every process `up` starts gets the environment marker ``KILN_CLUSTER=<state
dir>``. `down` stops processes by pid file first and then by scanning /proc for
that marker and for processes running one of the built binaries, so strays (a
component whose pid file was lost or that was started by hand, pod processes
the node left behind, which inherit the marker) are found too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MARKER = "KILN_CLUSTER"
"""Environment variable naming the state directory of the cluster a process belongs to."""


@dataclass(frozen=True)
class Running:
    """A process identified by pid and kernel start time (so a reused pid is not mistaken for it)."""

    pid: int
    """Process id."""
    start_ticks: int
    """Field 22 of /proc/<pid>/stat: start time in clock ticks since boot."""


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are plain.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie is as good as gone
        return None
    return int(fields[19])


def alive(proc: Running) -> bool:
    return _start_ticks(proc.pid) == proc.start_ticks


def read_pidfile(path: Path) -> Running | None:
    """The process recorded in ``path`` if it is still that same process, else None."""
    try:
        pid_s, ticks_s = path.read_text().split()
        proc = Running(int(pid_s), int(ticks_s))
    except (OSError, ValueError):
        return None
    return proc if alive(proc) else None


def start(argv: list[str], *, log: Path, pidfile: Path, cluster: Path, env: dict[str, str] | None = None) -> Running:
    """Start ``argv`` detached (own session), appending output to ``log``; record it in ``pidfile``."""
    full_env = {**os.environ, **(env or {}), MARKER: str(cluster)}
    with log.open("ab") as out:
        out.write(f"\n==== {time.strftime('%F %T')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=full_env, start_new_session=True, cwd=cluster,
        )
    ticks = _start_ticks(child.pid)
    if ticks is None:
        raise RuntimeError(f"{argv[0]} exited at once; see {log}")
    proc = Running(child.pid, ticks)
    pidfile.write_text(f"{proc.pid} {proc.start_ticks}\n")
    return proc


def stop(proc: Running, grace_s: float = 10.0) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL; returns once the process is gone."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not alive(proc):
                return
            time.sleep(0.1)
    if alive(proc):
        raise RuntimeError(f"pid {proc.pid} survived SIGKILL")


def rss_mib(proc: Running) -> float:
    """Resident memory of the process in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def marked(cluster: Path, bin_dir: Path | None = None) -> Iterator[Running]:
    """This cluster's processes: those carrying its marker, and (when ``bin_dir`` is
    given) any process running a binary from there, e.g. one started by hand.
    This process and its ancestors are never included."""
    needle = f"{MARKER}={cluster}".encode()
    bins = {str(p.resolve()) for p in bin_dir.iterdir()} if bin_dir and bin_dir.is_dir() else set()
    spared = _ancestors()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        try:
            ours = needle in (entry / "environ").read_bytes().split(b"\0")
            if not ours and bins:
                ours = os.readlink(entry / "exe").removesuffix(" (deleted)") in bins
        except OSError:
            continue
        if ours:
            ticks = _start_ticks(int(entry.name))
            if ticks is not None:
                yield Running(int(entry.name), ticks)


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids
