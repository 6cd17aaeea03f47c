"""One container of a pod: start, watch, probe, restart with back-off, stop."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kiln_devcluster.node import launch
from kiln_devcluster.node.backoff import Backoff
from kiln_devcluster.node.envresolve import ConfigError
from kiln_devcluster.node.images import UnknownImage
from kiln_devcluster.node.podstatus import ContainerRecord, now_iso
from kiln_devcluster.node.probes import Probe

log = logging.getLogger(__name__)

Prepare = Callable[[Mapping[str, Any]], tuple[tuple[str, ...], dict[str, str], Path]]
"""container spec -> (argv, env, launch script); raises UnknownImage / ConfigError."""
EventFn = Callable[[str, str, str], None]
"""(reason, message, type) -> records an Event on the pod."""


class ContainerRunner:
    """Lifecycle of one container; the pod worker calls :meth:`step` periodically."""

    def __init__(self, spec: Mapping[str, Any], log_dir: Path, backoff: Backoff, event: EventFn,
                 on_exit: Callable[[], None] = lambda: None) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.record = ContainerRecord(name=self.name, image=spec.get("image", ""))
        self.log_file = log_dir / f"{self.name}.log"
        self.previous_log = log_dir / f"{self.name}.previous.log"
        self.backoff = backoff
        self.event = event
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.run_started = 0.0
        self.restart_at = 0.0
        self.ever_ran = False
        self.probes: dict[str, Probe] = {}
        self.ports = {p["name"]: int(p["containerPort"]) for p in spec.get("ports") or [] if p.get("name")}
        self._last_wait_reason = ""
        self.on_exit = on_exit

    # -- starting -------------------------------------------------------------------------------
    def try_start(self, prepare: Prepare, netns: str | None) -> bool:
        """Start now if not in back-off; returns True when a process is running afterwards."""
        if self.proc is not None:
            return True
        if time.monotonic() < self.restart_at:
            return False
        try:
            argv, env, script = prepare(self.spec)
        except UnknownImage as exc:
            pulled_before = self._last_wait_reason in ("ErrImagePull", "ImagePullBackOff")
            self._wait("ImagePullBackOff" if pulled_before else "ErrImagePull", str(exc), "Failed", "Warning")
            self.restart_at = time.monotonic() + 5
            return False
        except ConfigError as exc:
            self._wait("CreateContainerConfigError", str(exc), "Failed", "Warning")
            self.restart_at = time.monotonic() + 2
            return False
        except Exception as exc:  # API errors while resolving env, launch failures: retry shortly
            log.warning("container %s: cannot start: %r", self.name, exc)
            self._wait("CreateContainerError", str(exc), "Failed", "Warning")
            self.restart_at = time.monotonic() + 2
            return False
        if self.ever_ran and self.log_file.exists():
            self.log_file.replace(self.previous_log)  # `kubectl logs --previous` reads this one
        self.env = env
        self.proc = launch.start(script, argv, env, netns, self.log_file)
        # Wake the pod worker the moment the process exits instead of at its next tick.
        proc = self.proc
        threading.Thread(target=lambda: (proc.wait(), self.on_exit()), daemon=True,
                         name=f"wait-{self.name}-{proc.pid}").start()
        self.ever_ran = True
        self.run_started = time.monotonic()
        rec = self.record
        rec.state, rec.reason, rec.message = "running", "", ""
        rec.started_at, rec.container_id = now_iso(), f"kiln://{self.proc.pid}"
        rec.ready = False
        rec.started = "startupProbe" not in self.spec or not self.spec.get("startupProbe")
        self._last_wait_reason = ""
        self.probes = {kind: Probe(self.spec[key], kind, self.ports, self.run_started)
                       for kind, key in (("readiness", "readinessProbe"), ("liveness", "livenessProbe"),
                                         ("startup", "startupProbe")) if self.spec.get(key)}
        if "readiness" not in self.probes:
            rec.ready = rec.started
        self.event("Started", f"Started container {self.name}", "Normal")
        return True

    def _wait(self, reason: str, message: str, event_reason: str, kind: str) -> None:
        rec = self.record
        if self._last_wait_reason != reason:
            self.event(event_reason if reason != "ImagePullBackOff" else "BackOff",
                       f"{reason}: {message}" if reason != "ImagePullBackOff" else f'Back-off pulling image "{rec.image}"',
                       kind)
        self._last_wait_reason = reason
        rec.state, rec.reason, rec.message = "waiting", reason, message

    # -- running --------------------------------------------------------------------------------
    def poll(self) -> bool:
        """Record an exit of the process; True when it exited since the last call."""
        if self.proc is None or self.proc.poll() is None:
            return False
        code = self.proc.returncode
        rec = self.record
        rec.state, rec.finished_at = "terminated", now_iso()
        rec.signal = -code if code < 0 else None
        rec.exit_code = 128 - code if code < 0 else code  # a signal shows as 128+N, as in containers
        rec.reason = "Completed" if rec.exit_code == 0 else "Error"
        rec.message, rec.ready, rec.started = "", False, False
        self.proc = None
        return True

    def schedule_restart(self) -> None:
        """Move a terminated container to CrashLoopBackOff waiting (or restart at once if short back-off)."""
        rec = self.record
        delay = self.backoff.next_delay(time.monotonic() - self.run_started)
        rec.last_terminated = rec.terminated_dict()
        rec.restart_count += 1
        rec.state, rec.reason = "waiting", "CrashLoopBackOff"
        rec.message = f"back-off {delay:g}s restarting failed container={self.name}"
        self._last_wait_reason = "CrashLoopBackOff"
        self.restart_at = time.monotonic() + delay
        if rec.exit_code != 0:
            self.event("BackOff", f"Back-off restarting failed container {self.name}", "Warning")

    def run_probes(self, ip: str) -> bool:
        """Run due probes; returns False when liveness/startup says the container must be restarted."""
        if self.proc is None:
            return True
        now, rec = time.monotonic(), self.record
        startup = self.probes.get("startup")
        if startup is not None and not rec.started:
            if startup.due(now):
                verdict = startup.run(ip, self._exec)
                if verdict is True:
                    rec.started = True
                    rec.ready = "readiness" not in self.probes
                elif verdict is False:
                    self.event("Unhealthy", f"Startup probe failed: {startup.last_message}", "Warning")
                    return False
            return True
        readiness = self.probes.get("readiness")
        if readiness is not None and readiness.due(now):
            verdict = readiness.run(ip, self._exec)
            if verdict is False and rec.ready:
                self.event("Unhealthy", f"Readiness probe failed: {readiness.last_message}", "Warning")
            rec.ready = bool(verdict)
        liveness = self.probes.get("liveness")
        if liveness is not None and liveness.due(now) and liveness.run(ip, self._exec) is False:
            self.event("Unhealthy", f"Liveness probe failed: {liveness.last_message}", "Warning")
            return False
        return True

    def _exec(self, argv: list[str], timeout: float) -> tuple[int, str]:
        assert self.proc is not None  # only called while running
        return launch.exec_in(self.proc.pid, argv, self.env, timeout)

    # -- stopping -------------------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float) -> None:
        """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL; records the exit."""
        if self.proc is None:
            return
        self.event("Killing", f"Stopping container {self.name}", "Normal")
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=max(grace, 0.1))
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()
        self.poll()
