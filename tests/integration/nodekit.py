"""Helpers for the process-node integration tests: namespaces, pod manifests, waits on pod state."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client
from waiting import wait_for

PY_IMAGE = "python:3.11-slim"  # mapped to the project venv by devcluster/images.yaml


@contextmanager
def namespace(core: client.CoreV1Api, prefix: str) -> Iterator[str]:
    """A fresh namespace, deleted (and waited for) afterwards so pods do not leak between tests."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    # The default ServiceAccount is created by the controller-manager; pods need it for admission.
    wait_for(lambda: core.read_namespaced_service_account("default", name), 60, f"default SA in {name}")
    try:
        yield name
    finally:
        core.delete_namespace(name)
        wait_for(lambda: not core.list_namespaced_pod(name).items, 120, f"pods of {name} gone")


def pod(name: str, command: list[str], image: str = PY_IMAGE, restart: str = "Never", **container: Any) -> dict[str, Any]:
    """A one-container pod manifest; extra keyword arguments go into the container."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"test": name}},
        "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 5,
                 "containers": [{"name": "main", "image": image, "command": command, **container}]},
    }


def read_pod(core: client.CoreV1Api, ns: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = core.api_client.sanitize_for_serialization(core.read_namespaced_pod(name, ns))
    return out


def wait_phase(core: client.CoreV1Api, ns: str, name: str, phases: tuple[str, ...], timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        p = read_pod(core, ns, name)
        return p if p.get("status", {}).get("phase") in phases else None

    return wait_for(check, timeout, f"pod {ns}/{name} in phase {phases}")


def waiting_reason(p: dict[str, Any], container: str = "main") -> str:
    for st in p.get("status", {}).get("containerStatuses") or []:
        if st["name"] == container:
            return str((st.get("state", {}).get("waiting") or {}).get("reason", ""))
    return ""


def wait_waiting_reason(core: client.CoreV1Api, ns: str, name: str, reasons: tuple[str, ...],
                        timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        p = read_pod(core, ns, name)
        return p if waiting_reason(p) in reasons else None

    return wait_for(check, timeout, f"pod {ns}/{name} waiting with reason in {reasons}")


def event_reasons(core: client.CoreV1Api, ns: str, name: str) -> list[tuple[str, str]]:
    evs = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    return [(e.reason or "", e.message or "") for e in evs]


def exit_code(p: dict[str, Any], container: str = "main") -> int | None:
    for st in p.get("status", {}).get("containerStatuses") or []:
        if st["name"] == container and "terminated" in (st.get("state") or {}):
            return int(st["state"]["terminated"]["exitCode"])
    return None


def pod_log(core: client.CoreV1Api, ns: str, name: str, **kwargs: Any) -> str:
    """``read_namespaced_pod_log`` as text.

    kubernetes 36.x returns ``str(bytes)`` ("b'...'") for this text/plain endpoint when it preloads
    the body, so read the raw response and decode it here.
    """
    resp = core.read_namespaced_pod_log(name, ns, _preload_content=False, **kwargs)
    return str(resp.data.decode("utf-8"))
