"""The rollout as a pure decision: what is observed → the one next step.

A rollout of version N to target T goes:

    canary (T-canary loads N) → gate Job (real inference vs. the export's reference)
        → promote (first time: create T; later: swap N in place in every serving pod)
        → record N as live → remove the canary

Any failure before promotion leaves what serves untouched: the canary is removed and the run gets
RolloutFailed with the reason. The handler calls `plan()` on every tick and executes its step;
steps are idempotent, so a restarted operator simply continues.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Step(Enum):
    ENSURE_CANARY = "EnsureCanary"
    WAIT_CANARY = "WaitCanary"
    START_GATE = "StartGate"
    WAIT_GATE = "WaitGate"
    CREATE_SERVING = "CreateServing"
    WAIT_SERVING = "WaitServing"
    SWAP_VERSION = "SwapVersion"
    RECORD_LIVE = "RecordLive"
    CLEANUP = "Cleanup"
    DONE = "Done"
    FAIL = "Fail"


@dataclass(frozen=True)
class PodView:
    """What matters of one Triton pod."""

    ip: str | None
    ready: bool
    waiting_reason: str | None = None
    restarts: int = 0
    version: int | None = None
    """Version the pod serves (serving pods: as verified through the API)."""


@dataclass(frozen=True)
class Observed:
    candidate: int
    """The version this run exported and wants live."""
    live_version: int | None
    """Version recorded live on the target (Deployment annotation; set only after verification)."""
    serving_exists: bool
    serving_pods: list[PodView] = field(default_factory=list)
    serving_replicas: int = 1
    canary_version: int | None = None
    canary_pod: PodView | None = None
    gate: str | None = None
    """Gate Job outcome: None (absent), "Running", "Succeeded", "Failed"."""
    gate_message: str = ""
    elapsed_s: float = 0.0
    """Seconds since this rollout began (after any manual hold: see rollout.py)."""
    canary_deadline_s: float = 300.0
    serving_deadline_s: float = 900.0
    """By then every serving pod must answer for the candidate, or the rollout fails (ServingNotReady)."""
    repository: str = ""
    """Model repository the run exported to."""
    serving_repository: str | None = None
    """Repository the existing target reads (its live ConfigMap); None when there is no target."""
    conflict: str = ""
    """An object the rollout would adopt or delete exists but is not kiln's (names it); else empty."""


@dataclass(frozen=True)
class Decision:
    step: Step
    reason: str = ""
    message: str = ""


# Waiting reasons that will not fix themselves: the candidate cannot start.
_FATAL_WAITING = {"ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "CrashLoopBackOff"}


def plan(o: Observed) -> Decision:
    if o.conflict:
        # Someone else's object under a name the target needs: never adopt it, never delete it.
        return Decision(Step.FAIL, "OwnershipConflict", o.conflict)
    if o.serving_repository and o.repository and o.serving_repository != o.repository:
        # Version numbers only mean something inside one repository: never swap across them.
        return Decision(Step.FAIL, "RepositoryMismatch",
                        f"the target serves models from {o.serving_repository}, this run exported to {o.repository}")
    if o.live_version == o.candidate:
        return _finish(o)
    if o.gate == "Failed":
        return Decision(Step.FAIL, "GateFailed", o.gate_message or "the gate Job failed")
    if o.gate == "Succeeded":
        return _promote(o)
    if o.canary_version != o.candidate or o.canary_pod is None:
        if o.elapsed_s > o.canary_deadline_s:
            return Decision(Step.FAIL, "CanaryNotReady", f"no canary pod within {o.canary_deadline_s:.0f}s")
        return Decision(Step.ENSURE_CANARY)
    pod = o.canary_pod
    if pod.waiting_reason in _FATAL_WAITING or pod.restarts >= 2:
        why = pod.waiting_reason or f"{pod.restarts} restarts"
        return Decision(Step.FAIL, "CanaryFailed", f"the candidate version {o.candidate} does not load ({why})")
    if not pod.ready or pod.ip is None:
        if o.elapsed_s > o.canary_deadline_s:
            return Decision(Step.FAIL, "CanaryNotReady",
                            f"version {o.candidate} not ready within {o.canary_deadline_s:.0f}s")
        return Decision(Step.WAIT_CANARY)
    if o.gate is None:
        return Decision(Step.START_GATE)
    return Decision(Step.WAIT_GATE)


def _promote(o: Observed) -> Decision:
    if not o.serving_exists:
        return Decision(Step.CREATE_SERVING)
    ready = [p for p in o.serving_pods if p.ready and p.ip]
    if o.live_version is None or len(ready) < o.serving_replicas:
        # First rollout (pods come up with the candidate) or pods still starting.
        return _wait_serving(o) if not _all_serve(o, ready) else Decision(Step.RECORD_LIVE)
    if not _all_serve(o, ready):
        return Decision(Step.SWAP_VERSION)
    return Decision(Step.RECORD_LIVE)


def _all_serve(o: Observed, ready: list[PodView]) -> bool:
    return len(ready) >= o.serving_replicas and all(p.version == o.candidate for p in ready)


def _not_serving(o: Observed) -> str:
    """Which serving pods do not (yet) answer for the candidate, and why, for the run's message."""
    ready = [p for p in o.serving_pods if p.ready and p.ip]
    why = [f"{p.ip or 'a pod'}: {p.waiting_reason or ('not ready' if not p.ready else f'serves v{p.version}')}"
           for p in o.serving_pods if not (p.ready and p.ip and p.version == o.candidate)]
    if len(ready) < o.serving_replicas and not why:
        why = [f"{len(o.serving_pods)} of {o.serving_replicas} pods exist"]
    return f"v{o.candidate} is not served by every pod ({'; '.join(why)})"


def _wait_serving(o: Observed) -> Decision:
    """Keep waiting for the serving pods, with the reason in the run's message, until the deadline."""
    if o.elapsed_s > o.serving_deadline_s:
        return Decision(Step.FAIL, "ServingNotReady", f"{_not_serving(o)} after {o.serving_deadline_s:.0f}s")
    return Decision(Step.WAIT_SERVING, "ServingNotReady", _not_serving(o))


def _finish(o: Observed) -> Decision:
    # Recorded live is not enough: every serving pod must answer for the version now (after a
    # restart of the cluster the record survives while the pods may crash on a missing model).
    if not _all_serve(o, [p for p in o.serving_pods if p.ready and p.ip]):
        return _wait_serving(o)
    if o.canary_version is not None or o.canary_pod is not None:
        return Decision(Step.CLEANUP)
    return Decision(Step.DONE)
