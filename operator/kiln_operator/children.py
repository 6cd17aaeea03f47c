"""Reading children's state: Job and PyTorchJob outcomes, and why a gang's pods died."""

from __future__ import annotations

from typing import Any

from kiln_api.contract import is_permanent_exit

# Pod signals of a preemption or eviction, as opposed to the program failing on its own.
_PREEMPTION_REASONS = frozenset({"Preempted", "Evicted", "Shutdown", "NodeShutdown", "Terminated",
                                 "PreemptionByScheduler", "TerminationByKubelet", "DeletionByTaintManager",
                                 "EvictionByEvictionAPI", "DeletionByPodGC"})


def _true_conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conds = (obj.get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conds if c.get("status") == "True"}


def outcome(obj: dict[str, Any]) -> tuple[str, str]:
    """("Succeeded" | "Failed" | "Running", message) for a batch Job or a Kubeflow PyTorchJob."""
    true = _true_conditions(obj)
    for ctype, result in (("Complete", "Succeeded"), ("Succeeded", "Succeeded"), ("Failed", "Failed")):
        if ctype in true:
            c = true[ctype]
            return result, f"{c.get('reason', ctype)}: {c.get('message', '')}".strip(": ")
    return "Running", ""


def is_preemption(pods: list[dict[str, Any]]) -> bool:
    """Whether any pod of the gang was disrupted from outside (DisruptionTarget or an eviction reason)."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("reason") in _PREEMPTION_REASONS:
            return True
        for c in status.get("conditions") or []:
            if c.get("type") == "DisruptionTarget" and c.get("status") == "True":
                return True
    return False


def permanent_failure(pods: list[dict[str, Any]]) -> str | None:
    """Which pod exited with a code of the pod contract that no restart can fix (a bad config), if any."""
    for pod in pods:
        for st in (pod.get("status") or {}).get("containerStatuses") or []:
            code = ((st.get("state") or {}).get("terminated") or {}).get("exitCode")
            if code is not None and is_permanent_exit(int(code)):
                return f"pod {pod.get('metadata', {}).get('name', '?')} exited with {code} (bad config)"
    return None


def exit_message(pods: list[dict[str, Any]], code: int) -> str | None:
    """The termination message of the first container that exited with ``code`` ("" when it left
    none), or None when no container did."""
    for pod in pods:
        for st in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (st.get("state") or {}).get("terminated") or {}
            if term.get("exitCode") is not None and int(term["exitCode"]) == code:
                return str(term.get("message") or "").strip()
    return None


def terminating(obj: dict[str, Any] | None) -> bool:
    return obj is not None and bool(obj["metadata"].get("deletionTimestamp"))


def failed_container(pods: list[dict[str, Any]]) -> tuple[str, int, str] | None:
    """(pod name, exit code, termination message) of the first container that exited non-zero."""
    for pod in pods:
        for st in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (st.get("state") or {}).get("terminated") or (st.get("lastState") or {}).get("terminated") or {}
            if term.get("exitCode") not in (None, 0):
                name = str((pod.get("metadata") or {}).get("name", "?"))
                return name, int(term["exitCode"]), str(term.get("message") or "").strip()
    return None


def cause_line(text: str) -> str:
    """The line of a pod's message or log tail that says what went wrong: the trainer prints its config
    errors as ``kiln-trainer <step>: error: ...``; otherwise the last non-empty line (a traceback's)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error:" in ln or ln.startswith(("ValueError", "SpecError", "QuantizationRejected")):
            return ln[:1000]
    return lines[-1][:1000] if lines else ""


# Waiting reasons of a container that will not start until a person changes something outside the run.
_BLOCKED = {
    "CreateContainerConfigError": "ContainerConfigError",  # a Secret or key the pod references is missing
    "ErrImagePull": "ImagePullFailed", "ImagePullBackOff": "ImagePullFailed", "InvalidImageName": "ImagePullFailed",
    "CreateContainerError": "ContainerCreateFailed",
}


_CREATE_REFUSED = frozenset({"FailedCreate", "FailedCreatePod"})
"""Warning reasons of the Job and PyTorchJob controllers when the API server refused a pod (admission:
Pod Security, quota, a webhook): no pod exists, so no pod status can say why."""


def refused(events: list[dict[str, Any]]) -> tuple[str, str] | None:
    """("PodCreateRefused", the controller's newest message) when a pod of the job could not be created."""
    hits = [e for e in events if e.get("reason") in _CREATE_REFUSED]
    if not hits:
        return None
    newest = max(hits, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    obj = newest.get("involvedObject") or {}
    return "PodCreateRefused", f"{obj.get('kind', '?')} {obj.get('name', '?')}: {newest.get('message', '')}"[:1000]


def blocked(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message naming the pod and the object at fault) when a pod cannot start its container,
    or the scheduler found no node for it (``Unschedulable``: resources, selectors, taints)."""
    for pod in pods:
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                    and cond.get("reason") == "Unschedulable":
                return "Unschedulable", f"pod {(pod.get('metadata') or {}).get('name', '?')}: {cond.get('message', '')}"
        for st in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (st.get("state") or {}).get("waiting") or {}
            reason = _BLOCKED.get(str(waiting.get("reason")))
            if reason is None:
                continue
            message = str(waiting.get("message") or waiting.get("reason"))
            if reason == "ContainerConfigError" and "secret" in message.lower():
                reason = "SecretNotFound"
            return reason, f"pod {(pod.get('metadata') or {}).get('name', '?')}: {message}"
    return None
