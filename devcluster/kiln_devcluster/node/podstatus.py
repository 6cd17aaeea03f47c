"""Container records and the pod status computed from them (pure; mirrors the kubelet's getPhase)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

RESTART_POLICIES = ("Always", "OnFailure", "Never")


def now_iso() -> str:
    """The current time as the API's RFC 3339 seconds timestamp."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerRecord:
    """What the node knows about one container; turned into a ``containerStatuses`` entry."""

    name: str
    """Container name."""
    image: str
    """Image as written in the spec."""
    state: str = "waiting"
    """waiting | running | terminated."""
    reason: str = "ContainerCreating"
    """Reason of a waiting or terminated state."""
    message: str = ""
    """Human-readable detail for the state."""
    exit_code: int | None = None
    """Exit code once terminated."""
    signal: int | None = None
    """Signal that ended the process, if any."""
    started_at: str | None = None
    """When the current/last run started."""
    finished_at: str | None = None
    """When the last run ended."""
    restart_count: int = 0
    """How often the container was restarted."""
    ready: bool = False
    """Readiness as the probes say (false when not running)."""
    started: bool = False
    """Startup probe passed (or none) while running."""
    last_terminated: dict[str, Any] | None = None
    """The previous run's ``terminated`` state, shown as ``lastState``."""
    container_id: str = ""
    """``kiln://<pid>`` of the current process."""

    def terminated_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"exitCode": self.exit_code if self.exit_code is not None else 0,
                               "reason": self.reason, "startedAt": self.started_at,
                               "finishedAt": self.finished_at, "containerID": self.container_id}
        if self.message:
            out["message"] = self.message
        if self.signal:
            out["signal"] = self.signal
        return out

    def to_status(self) -> dict[str, Any]:
        """The ``containerStatuses[]`` entry."""
        if self.state == "running":
            state: dict[str, Any] = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": self.terminated_dict()}
        else:
            waiting: dict[str, Any] = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        status: dict[str, Any] = {
            "name": self.name, "image": self.image, "imageID": f"kiln-local://{self.image}",
            "state": state, "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
            "ready": self.ready and self.state == "running", "restartCount": self.restart_count,
            "started": self.started and self.state == "running",
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


def _succeeded(rec: ContainerRecord) -> bool:
    return rec.state == "terminated" and rec.exit_code == 0


def init_done(init: Sequence[ContainerRecord]) -> bool:
    """All init containers ran to exit code 0."""
    return all(_succeeded(rec) for rec in init)


def compute_phase(restart_policy: str, init: Sequence[ContainerRecord], main: Sequence[ContainerRecord]) -> str:
    """Pending/Running/Succeeded/Failed from the container records (the kubelet's rules)."""
    if restart_policy not in RESTART_POLICIES:
        raise ValueError(f"spec.restartPolicy must be one of {RESTART_POLICIES}, got {restart_policy!r}")
    if restart_policy == "Never" and any(r.state == "terminated" and r.exit_code != 0 for r in init):
        return "Failed"
    if not init_done(init):
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for rec in main:
        if rec.state == "running":
            running += 1
        elif rec.state == "terminated":
            stopped += 1
            succeeded += rec.exit_code == 0
        elif rec.last_terminated is not None:
            # Waiting to restart after a run (CrashLoopBackOff): counts as stopped, like the kubelet.
            stopped += 1
            succeeded += rec.last_terminated.get("exitCode") == 0
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if not stopped:
        return "Pending"
    if restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    return "Failed" if restart_policy == "Never" else "Running"


@dataclass
class Conditions:
    """Pod conditions with transition times kept stable across recomputation."""

    _since: dict[str, tuple[str, str]] = field(default_factory=dict)

    def render(self, values: dict[str, tuple[bool, str]]) -> list[dict[str, Any]]:
        """``values``: type -> (status, reason); returns the ``status.conditions`` list."""
        out = []
        for ctype, (ok, reason) in values.items():
            status = "True" if ok else "False"
            prev = self._since.get(ctype)
            if prev is None or prev[0] != status:
                self._since[ctype] = (status, now_iso())
            cond: dict[str, Any] = {"type": ctype, "status": status,
                                    "lastTransitionTime": self._since[ctype][1], "lastProbeTime": None}
            if reason and not ok:
                cond["reason"] = reason
            out.append(cond)
        return out


def condition_values(phase: str, sandbox_ready: bool, init: Sequence[ContainerRecord],
                     main: Sequence[ContainerRecord]) -> dict[str, tuple[bool, str]]:
    """Truth values of the standard pod conditions."""
    done = phase in ("Succeeded", "Failed")
    all_ready = bool(main) and all(r.state == "running" and r.ready for r in main)
    not_ready_reason = "PodCompleted" if done else "ContainersNotReady"
    return {
        "PodReadyToStartContainers": (sandbox_ready, ""),
        "Initialized": (init_done(init) or done and not init, "ContainersNotInitialized"),
        "Ready": (all_ready and not done, not_ready_reason),
        "ContainersReady": (all_ready and not done, not_ready_reason),
        "PodScheduled": (True, ""),
    }
