"""One thread per pod bound to this node: sandbox, init containers, containers, status, deletion."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client

from kiln_devcluster.node import launch, netns
from kiln_devcluster.node.backoff import Backoff
from kiln_devcluster.node.config import NodeConfig
from kiln_devcluster.node.container import ContainerRunner
from kiln_devcluster.node.envresolve import ConfigError, resolve_env
from kiln_devcluster.node.expand import expand
from kiln_devcluster.node.hosts import PodAddr
from kiln_devcluster.node.images import REPO_ROOT, ImageMap, build_argv, runtime_env, venv_dir
from kiln_devcluster.node.kube import MERGE_PATCH, Kube
from kiln_devcluster.node.podstatus import Conditions, compute_phase, condition_values, now_iso
from kiln_devcluster.node.volumes import VolumeBuilder
from kiln_devcluster.procs import MARKER

log = logging.getLogger(__name__)
TICK = 0.25
VOLUME_SYNC_SECONDS = 10.0  # ConfigMap/Secret volume contents follow the API this often (kubelet: ~1 min)
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHIM_DIR = Path(__file__).resolve().parent / "shims"


class NodeServices(Protocol):
    """What a pod worker uses from the node around it."""

    config: NodeConfig
    kube: Kube
    images: ImageMap
    ipam: netns.IPAllocator

    def base_env(self, namespace: str) -> dict[str, str]: ...
    def hosts_changed(self, uid: str, addr: PodAddr | None, hosts_file: Path | None) -> None: ...
    def worker_done(self, uid: str) -> None: ...
    def mount_targets_in_use(self, except_uid: str) -> set[str]: ...


class PodWorker:
    """Runs one pod to completion or deletion; :meth:`update` feeds it newer pod objects."""

    def __init__(self, pod: dict[str, Any], node: NodeServices) -> None:
        self.pod = pod
        self.node = node
        self.cfg = node.config
        meta = pod["metadata"]
        self.uid, self.name, self.namespace = meta["uid"], meta["name"], meta["namespace"]
        self.dir = self.cfg.pod_dir(self.uid)
        self.hosts_file = self.dir / "etc-hosts"
        spec = pod["spec"]
        self.restart_policy = spec.get("restartPolicy") or "Always"
        backoff = (self.cfg.backoff_initial, self.cfg.backoff_max)
        self.wake = threading.Event()
        self.init = [ContainerRunner(c, self.dir / "logs", Backoff(*backoff), self._event, self.wake.set)
                     for c in spec.get("initContainers") or []]
        self.main = [ContainerRunner(c, self.dir / "logs", Backoff(*backoff), self._event, self.wake.set)
                     for c in spec.get("containers") or []]
        self.ip = ""
        self.netns_path: str | None = None
        self.sandbox_ready = False
        self.volumes: VolumeBuilder | None = None
        self.volume_paths: dict[str, Path] = {}
        self.conditions = Conditions()
        self.start_time = now_iso()
        self.last_status: dict[str, Any] | None = None
        self.deleted = threading.Event()
        self.stop_now = threading.Event()
        self._mount_error = ""
        self.volumes_ready = False
        self.created_paths: list[tuple[str, Path]] = []
        self.mount_targets: set[str] = set()
        self.sandbox_released = False
        self.volumes_refresh_at = time.monotonic() + VOLUME_SYNC_SECONDS
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.namespace}-{self.name}", daemon=True)

    # -- inputs -----------------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self.wake.set()

    def gone(self) -> None:
        """The pod object disappeared (force-deleted): stop at once."""
        self.deleted.set()
        self.wake.set()

    def runner(self, container: str) -> ContainerRunner | None:
        return next((r for r in self.init + self.main if r.name == container), None)

    # -- the loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self.stop_now.is_set():
                self.wake.clear()  # before the work: a wake-up during it starts the next round at once
                if self.deleted.is_set() or self.pod["metadata"].get("deletionTimestamp"):
                    self._terminate(delete_object=not self.deleted.is_set())
                    return
                try:
                    self._round()
                except Exception:
                    # The API server away, a netns command failing, ...: log it and try again; giving
                    # up would leave the pod Pending forever.
                    log.exception("pod %s/%s: sync failed; retrying", self.namespace, self.name)
                    self.wake.wait(2)
                self.wake.wait(TICK)
            self._terminate(delete_object=False)  # node shutdown
        except Exception:
            log.exception("pod worker %s/%s crashed", self.namespace, self.name)
            self._terminate(delete_object=False)
        finally:
            self.node.worker_done(self.uid)

    def _round(self) -> None:
        """One pass: set up what is missing, step the containers, report status."""
        if not self.sandbox_ready:
            self._setup_sandbox()
        if self.sandbox_ready and not self.volumes_ready:
            self._setup_volumes()
        if self.volumes_ready:
            self._refresh_volumes()
            self._sync_containers()
        self._report()
        if self.netns_path and self.last_status and self.last_status["phase"] in ("Succeeded", "Failed"):
            self._release_sandbox()  # like the kubelet: a finished pod keeps its status, not its netns

    def _setup_sandbox(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.pod["spec"].get("hostNetwork"):
            self.ip = self.cfg.node_ip
        else:
            self.ip = self.node.ipam.allocate()
            self.netns_path = netns.create_sandbox(self.uid, self.ip, self.cfg.prefix_len, self.cfg.node_ip,
                                                   self.cfg.bridge)
        self.pod.setdefault("status", {})["podIP"] = self.ip  # fieldRef status.podIP reads this
        self.pod["status"]["hostIP"] = self.cfg.node_ip
        self.hosts_file.write_text("")
        # Pods resolve through /etc/hosts; the (absent) nameserver on the node IP refuses at once, so
        # an unknown name fails fast instead of timing out against a resolver the pod cannot reach.
        (self.dir / "resolv.conf").write_text(f"nameserver {self.cfg.node_ip}\noptions timeout:1 attempts:1\n")
        self.node.hosts_changed(self.uid, PodAddr.from_pod(self.pod, self.ip), self.hosts_file)
        self.sandbox_ready = True

    def _setup_volumes(self) -> None:
        self.volumes = VolumeBuilder(self.pod, self.dir, self.node.kube, self.cfg.state_dir / self.cfg.name)
        try:
            self.volume_paths = self.volumes.host_paths()
            self.volumes_ready, self._mount_error = True, ""
        except (ConfigError, client.ApiException) as exc:
            # ApiException: e.g. the TokenRequest for a ServiceAccount that does not exist yet.
            if str(exc) != self._mount_error:
                self._event("FailedMount", f"MountVolume.SetUp failed: {exc}", "Warning")
            self._mount_error = str(exc)
            self.volumes = None
            self.wake.wait(2)

    def _refresh_volumes(self) -> None:
        now = time.monotonic()
        if self.volumes is not None and now >= self.volumes_refresh_at:
            self.volumes.refresh()
            self.volumes_refresh_at = now + VOLUME_SYNC_SECONDS

    def _sync_containers(self) -> None:
        for runner in self.init:
            if runner.record.state == "terminated" and runner.record.exit_code == 0:
                continue
            self._step(runner, is_init=True)
            return  # init containers run one at a time, in order
        for runner in self.main:
            self._step(runner, is_init=False)

    def _step(self, runner: ContainerRunner, is_init: bool) -> None:
        rec = runner.record
        if runner.proc is not None:
            if runner.poll():
                self._after_exit(runner, is_init)
            elif not is_init and not runner.run_probes(self.ip):
                runner.stop(self._grace())
                self._after_exit(runner, is_init)
            return
        if rec.state == "terminated":
            return  # finished for good (restart policy says no)
        if runner.ever_ran and self.volumes is not None and time.monotonic() >= runner.restart_at:
            self.volumes.refresh()  # a restarted container sees current ConfigMap/Secret contents
        runner.try_start(self._prepare, self.netns_path)

    def _after_exit(self, runner: ContainerRunner, is_init: bool) -> None:
        code = runner.record.exit_code
        policy = self.restart_policy
        restart = policy == "Always" and not is_init or (policy != "Never" and code != 0)
        if restart:
            runner.schedule_restart()

    def _prepare(self, spec: Mapping[str, Any]) -> tuple[tuple[str, ...], dict[str, str], Path]:
        """argv, env and launch script of a container (raises UnknownImage / ConfigError)."""
        rule = self.node.images.resolve(spec.get("image") or "")
        base = runtime_env(rule.runtime, HOST_PATH, SHIM_DIR)
        if MARKER in os.environ:
            # Containers carry the cluster's process marker too, so `down` finds any the node left behind.
            base[MARKER] = os.environ[MARKER]
        base["HOSTNAME"] = PodAddr.from_pod(self.pod, self.ip).hostname
        base.update(self.node.base_env(self.namespace))
        env = resolve_env(spec, self.pod, base, self.node.kube.get_secret, self.node.kube.get_configmap)
        argv = build_argv(rule, [expand(a, env) for a in spec.get("command") or []],
                          [expand(a, env) for a in spec.get("args") or []], self.cfg.state_dir)
        mounts, hidden = launch.split_shadowing(launch.plan_mounts(spec, self.volume_paths, self.hosts_file),
                                                [REPO_ROOT, venv_dir(), self.cfg.state_dir])
        for m in hidden:
            log.warning("%s/%s: not mounting %s over the node's runtime; TMPDIR=%s instead",
                        self.namespace, self.name, m.target, m.source)
            env["TMPDIR"] = str(m.source)
        for m in mounts:
            self.mount_targets.add(m.target)
            root = launch.missing_root(m.target)
            if root is not None:
                self.created_paths.append((m.target, root))
        script = self.dir / "containers" / f"{spec['name']}.sh"
        script.parent.mkdir(parents=True, exist_ok=True)
        hostname = PodAddr.from_pod(self.pod, self.ip).hostname
        script.write_text(launch.render_script(mounts, hostname, spec.get("workingDir") or ""))
        return argv, env, script

    def _grace(self) -> float:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds")
        return float(30 if grace is None else grace)

    # -- status -----------------------------------------------------------------------------------
    def phase(self) -> str:
        return compute_phase(self.restart_policy, [r.record for r in self.init], [r.record for r in self.main])

    def status(self) -> dict[str, Any]:
        init, main = [r.record for r in self.init], [r.record for r in self.main]
        phase = self.phase()
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": self.conditions.render(condition_values(phase, self.sandbox_ready, init, main)),
            "hostIP": self.cfg.node_ip, "hostIPs": [{"ip": self.cfg.node_ip}],
            "startTime": self.start_time,
            "containerStatuses": [r.to_status() for r in main],
        }
        if init:
            status["initContainerStatuses"] = [r.to_status() for r in init]
        if self.ip:
            status["podIP"], status["podIPs"] = self.ip, [{"ip": self.ip}]
        return status

    def _report(self) -> None:
        status = self.status()
        if status == self.last_status:
            return
        try:
            self.node.kube.core.patch_namespaced_pod_status(
                self.name, self.namespace, {"status": status}, _content_type=MERGE_PATCH)
            self.last_status = status
        except client.ApiException as exc:
            if exc.status == 404:
                self.gone()
            else:
                log.warning("status of %s/%s not written: %s %s", self.namespace, self.name, exc.status, exc.reason)
        except Exception as exc:  # API server briefly away: the next tick retries
            log.warning("status of %s/%s not written: %r", self.namespace, self.name, exc)
        # Resolvable as soon as it has an address (like publishNotReadyAddresses), so a gang's ranks
        # find rank 0 while it is still starting; finished pods drop out.
        live = status["phase"] in ("Pending", "Running")
        addr = PodAddr.from_pod(self.pod, self.ip) if self.ip and live else None
        if self.ip and not self.sandbox_released:
            self.node.hosts_changed(self.uid, addr, self.hosts_file)

    def _event(self, reason: str, message: str, kind: str) -> None:
        self.node.kube.event(self.pod, reason, message, kind, host=self.cfg.name)

    # -- teardown ---------------------------------------------------------------------------------
    def _release_sandbox(self) -> None:
        self.sandbox_released = True
        self.node.hosts_changed(self.uid, None, None)
        # rmdir of a host folder would detach the mounts other pods hold on it, so skip shared ones.
        in_use = self.node.mount_targets_in_use(self.uid)
        for target, root in sorted(self.created_paths, key=lambda tr: -tr[0].count("/")):
            if not any(t == str(root) or t.startswith(f"{root}/") for t in in_use):
                launch.remove_created(target, root)
        self.created_paths, self.mount_targets = [], set()
        if self.netns_path:
            netns.delete_sandbox(self.uid)
            self.node.ipam.release(self.ip)
        self.netns_path = None

    def _terminate(self, delete_object: bool) -> None:
        """Stop all containers (SIGTERM, grace, SIGKILL), free the sandbox, then delete the pod."""
        grace = self._grace() if delete_object else min(self._grace(), 5.0)
        deadline = time.monotonic() + grace
        for runner in self.init + self.main:
            runner.signal(signal.SIGTERM)
        for runner in self.init + self.main:
            runner.stop(max(deadline - time.monotonic(), 0.1))
        if delete_object:
            self._report()
        self._release_sandbox()
        if delete_object:
            try:
                self.node.kube.core.delete_namespaced_pod(
                    self.name, self.namespace, grace_period_seconds=0,
                    body=client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=self.uid)))
            except client.ApiException as exc:
                if exc.status not in (404, 409):
                    log.warning("could not delete %s/%s: %s", self.namespace, self.name, exc.reason)
            shutil.rmtree(self.dir, ignore_errors=True)
