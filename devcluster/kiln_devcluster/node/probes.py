"""Readiness, liveness and startup probes, run from the host against the pod IP (exec ones inside the pod)."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ExecFn = Callable[[list[str], float], tuple[int, str]]


@dataclass
class ProbeCounter:
    """Success/failure thresholds of one probe (pure; the unit tests drive it)."""

    success_threshold: int = 1
    """Consecutive successes that flip the result to success."""
    failure_threshold: int = 3
    """Consecutive failures that flip the result to failure."""
    result: bool | None = None
    """Current verdict; None until a threshold was reached."""
    _succ: int = field(default=0, repr=False)
    _fail: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.success_threshold < 1 or self.failure_threshold < 1:
            raise ValueError("probe successThreshold and failureThreshold must be >= 1")

    def record(self, ok: bool) -> bool | None:
        """Add one outcome; returns the (possibly changed) verdict."""
        if ok:
            self._succ, self._fail = self._succ + 1, 0
            if self._succ >= self.success_threshold:
                self.result = True
        else:
            self._fail, self._succ = self._fail + 1, 0
            if self._fail >= self.failure_threshold:
                self.result = False
        return self.result


class Probe:
    """One configured probe of one container run."""

    def __init__(self, spec: Mapping[str, Any], kind: str, ports: Mapping[str, int], started: float) -> None:
        self.spec = spec
        self.kind = kind
        self.ports = ports
        self.period = float(spec.get("periodSeconds") or 10)
        self.timeout = float(spec.get("timeoutSeconds") or 1)
        self.counter = ProbeCounter(int(spec.get("successThreshold") or 1), int(spec.get("failureThreshold") or 3))
        self.next_at = started + float(spec.get("initialDelaySeconds") or 0)
        self.last_message = ""

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def run(self, ip: str, exec_fn: ExecFn) -> bool | None:
        """Probe once (when due) and return the verdict."""
        self.next_at = time.monotonic() + self.period
        ok, self.last_message = check(self.spec, ip, self.ports, self.timeout, exec_fn)
        return self.counter.record(ok)


def _port(value: Any, ports: Mapping[str, int]) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    if value in ports:
        return ports[value]
    raise ValueError(f"probe port {value!r} is neither a number nor a named container port")


def check(spec: Mapping[str, Any], ip: str, ports: Mapping[str, int], timeout: float,
          exec_fn: ExecFn) -> tuple[bool, str]:
    """One probe attempt: (success, message)."""
    try:
        if spec.get("httpGet"):
            return _http(spec["httpGet"], ip, ports, timeout)
        if spec.get("tcpSocket"):
            port = _port(spec["tcpSocket"]["port"], ports)
            with socket.create_connection((spec["tcpSocket"].get("host") or ip, port), timeout=timeout):
                return True, ""
        if spec.get("exec"):
            code, out = exec_fn(list(spec["exec"].get("command") or []), timeout)
            return code == 0, out
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return False, str(exc)
    return False, "probe has no supported handler (httpGet, tcpSocket, exec)"


def _http(get: Mapping[str, Any], ip: str, ports: Mapping[str, int], timeout: float) -> tuple[bool, str]:
    host = get.get("host") or ip
    port = _port(get["port"], ports)
    conn: http.client.HTTPConnection
    if (get.get("scheme") or "HTTP").upper() == "HTTPS":
        # The kubelet does not verify probe certificates either.
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
    headers.setdefault("User-Agent", "kube-probe/kiln")
    try:
        conn.request("GET", get.get("path") or "/", headers=headers)
        status = conn.getresponse().status
    finally:
        conn.close()
    return 200 <= status < 400, f"HTTP probe failed with statuscode: {status}"
