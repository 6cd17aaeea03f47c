"""Leader election on a coordination.k8s.io Lease: only the leader runs kopf (and so reconciles).

kopf's own peering pauses operators of lower priority, but two replicas of equal priority both keep
running ("possibly conflicting operators"), and a frozen peer only resumes after the peer's record
expires — it is not leader election. So the operator process elects first, the way
controller-runtime operators do:

- A candidate polls the Lease every ``retry_s``. It takes the Lease when nobody holds it, or when the
  holder's record has not changed for ``lease_s`` *as this candidate observed it* (local monotonic
  time, so clocks of different nodes never matter).
- The leader renews every ``renew_s``. If it cannot renew within ``lease_s - retry_s`` of its last
  renewal, a standby may already be leading: it exits at once (``os._exit``), as
  controller-runtime does, and its pod restarts as a candidate. Two reconcilers are never wanted.
- On a clean stop the leader empties ``holderIdentity``, so a standby takes over within ``retry_s``.
- Writes carry the Lease's resourceVersion: of two candidates racing for it, one gets 409 and waits.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("kiln.leader")

EXIT_LOST_LEASE = 3
"""Process exit code when the leader could not renew its Lease (a standby may lead now)."""


@dataclass(frozen=True)
class LeaseConfig:
    """Which Lease, who we are, and the timing (seconds)."""

    name: str
    namespace: str
    identity: str
    lease_s: int = 15
    renew_s: float = 5.0
    retry_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.retry_s < self.renew_s < self.lease_s - self.retry_s:
            raise ValueError(
                f"leader election: need retry ({self.retry_s}) < renew ({self.renew_s}) < "
                f"lease ({self.lease_s}) - retry; got otherwise"
            )


class LeaseElector:
    """Acquire, renew and release one Lease through the API server."""

    def __init__(self, api: client.CoordinationV1Api, cfg: LeaseConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api, self.cfg, self.clock = api, cfg, clock
        self._seen_version: str | None = None
        self._seen_at = 0.0
        self.last_renewed = 0.0

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _spec(self, transitions: int, acquired: datetime | None) -> client.V1LeaseSpec:
        now = self._now()
        return client.V1LeaseSpec(holder_identity=self.cfg.identity, lease_duration_seconds=self.cfg.lease_s,
                                  acquire_time=acquired or now, renew_time=now, lease_transitions=transitions)

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this process holds the Lease afterwards."""
        cfg = self.cfg
        try:
            lease = self.api.read_namespaced_lease(cfg.name, cfg.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            body = client.V1Lease(metadata=client.V1ObjectMeta(name=cfg.name, namespace=cfg.namespace),
                                  spec=self._spec(0, None))
            return self._write(lambda: self.api.create_namespaced_lease(cfg.namespace, body))
        spec = lease.spec or client.V1LeaseSpec()
        version = lease.metadata.resource_version
        if version != self._seen_version:  # the record moved: its holder is alive as of now
            self._seen_version, self._seen_at = version, self.clock()
        holder = spec.holder_identity or ""
        mine = holder == cfg.identity
        expired = self.clock() - self._seen_at >= (spec.lease_duration_seconds or cfg.lease_s)
        if not (mine or not holder or expired):
            return False
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        lease.spec = self._spec(transitions, spec.acquire_time if mine else None)
        if not mine:
            log.info("taking the lease %s/%s from %r", cfg.namespace, cfg.name, holder or "nobody")
        return self._write(lambda: self.api.replace_namespaced_lease(cfg.name, cfg.namespace, lease))

    def _write(self, call: Callable[[], Any]) -> bool:
        try:
            written = call()
        except ApiException as e:
            if e.status in (409, 422):  # another candidate wrote first (or created it meanwhile)
                return False
            raise
        self._seen_version, self._seen_at = written.metadata.resource_version, self.clock()
        self.last_renewed = self.clock()
        return True

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until this process leads (True) or `stop` is set (False)."""
        logged = False
        while stop is None or not stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    log.info("leading: holder of lease %s/%s as %s", self.cfg.namespace, self.cfg.name,
                             self.cfg.identity)
                    return True
            except ApiException as e:
                log.warning("lease %s/%s: %s", self.cfg.namespace, self.cfg.name, e.reason)
            if not logged:
                log.info("standby: lease %s/%s is held by another replica", self.cfg.namespace, self.cfg.name)
                logged = True
            time.sleep(self.cfg.retry_s)
        return False

    def renew_forever(self, on_lost: Callable[[], None]) -> None:
        """Renew every renew_s; call `on_lost` when renewal fails past the renew deadline."""
        deadline = self.cfg.lease_s - self.cfg.retry_s
        while True:
            time.sleep(self.cfg.renew_s)
            try:
                if self.try_acquire_or_renew():
                    continue
                log.error("lease %s/%s now held by another replica", self.cfg.namespace, self.cfg.name)
                on_lost()
                return
            except Exception as e:  # noqa: BLE001 - any failure counts against the renew deadline
                log.warning("lease renewal failed: %s", e)
            if self.clock() - self.last_renewed >= deadline:
                log.error("could not renew lease %s/%s for %.0fs", self.cfg.namespace, self.cfg.name, deadline)
                on_lost()
                return

    def release(self) -> None:
        """Give the Lease up (clean stop) so a standby need not wait for it to expire."""
        try:
            lease = self.api.read_namespaced_lease(self.cfg.name, self.cfg.namespace)
            if lease.spec and lease.spec.holder_identity == self.cfg.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = self._now()
                self.api.replace_namespaced_lease(self.cfg.name, self.cfg.namespace, lease)
                log.info("released lease %s/%s", self.cfg.namespace, self.cfg.name)
        except ApiException as e:
            log.warning("could not release lease %s/%s: %s", self.cfg.namespace, self.cfg.name, e.reason)


def exit_lost() -> None:
    """What the leader does when it lost the Lease: stop reconciling now, whatever kopf is doing."""
    logging.shutdown()
    os._exit(EXIT_LOST_LEASE)


def config_from_env(env: dict[str, str] | None = None) -> LeaseConfig | None:
    """The Lease settings from the pod's environment; None when leader election is off."""
    e = dict(os.environ) if env is None else env
    if e.get("KILN_LEADER_ELECTION", "").lower() not in ("1", "true", "yes"):
        return None
    namespace = e.get("KILN_LEASE_NAMESPACE") or e.get("POD_NAMESPACE") or ""
    if not namespace:
        raise ValueError("KILN_LEADER_ELECTION is on but neither KILN_LEASE_NAMESPACE nor POD_NAMESPACE is set")
    identity = e.get("POD_NAME") or f"{os.uname().nodename}-{os.getpid()}"
    lease_s = int(e.get("KILN_LEASE_SECONDS", "15"))
    # client-go's ratios (15/10/2 s): renew at a third of the lease, retry at an eighth.
    return LeaseConfig(name=e.get("KILN_LEASE_NAME", "kiln-operator"), namespace=namespace, identity=identity,
                       lease_s=lease_s, renew_s=lease_s / 3, retry_s=lease_s / 8)
