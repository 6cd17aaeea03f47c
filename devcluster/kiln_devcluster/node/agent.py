"""The node process: wires registration, informers, pod workers, service proxy, hosts files, logs API."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from kiln_devcluster.node import netns
from kiln_devcluster.node.config import NodeConfig
from kiln_devcluster.node.envresolve import service_link_env
from kiln_devcluster.node.hosts import PodAddr, render_hosts
from kiln_devcluster.node.images import ImageMap
from kiln_devcluster.node.informer import Informer
from kiln_devcluster.node.kube import Kube, make_api_client
from kiln_devcluster.node.kubeletapi import KubeletServer, LogTarget, serving_cert
from kiln_devcluster.node.nodeobj import NodeRegistration
from kiln_devcluster.node.podworker import PodWorker
from kiln_devcluster.node.proxy import ServiceProxy
from kiln_devcluster.node.services import routes, service_addrs

log = logging.getLogger(__name__)
TERMINAL = ("Succeeded", "Failed")


class HostsBook:
    """Pods with addresses and their hosts files; rewrites a file only when its text changes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.addrs: dict[str, PodAddr] = {}
        self.files: dict[str, Path] = {}
        self.owners: dict[str, PodAddr] = {}
        self.written: dict[str, str] = {}

    def set_pod(self, uid: str, addr: PodAddr | None, hosts_file: Path | None, owner: PodAddr | None) -> bool:
        """Record a pod's resolvable address (None: not resolvable) and its file; True if anything changed."""
        with self.lock:
            before = (self.addrs.get(uid), self.files.get(uid))
            if addr is None:
                self.addrs.pop(uid, None)
            else:
                self.addrs[uid] = addr
            if hosts_file is None:
                self.files.pop(uid, None)
                self.owners.pop(uid, None)
                self.written.pop(uid, None)
            else:
                self.files[uid] = hosts_file
                if owner is not None:
                    self.owners[uid] = owner
            return before != (self.addrs.get(uid), self.files.get(uid))

    def rewrite(self, services: list[Any]) -> None:
        with self.lock:
            pods = list(self.addrs.values())
            for uid, path in self.files.items():
                text = render_hosts(self.owners[uid], pods, services)
                if self.written.get(uid) != text:
                    # Same inode (truncate + write): the bind mounts in running containers see it.
                    path.write_text(text)
                    self.written[uid] = text


class ProcessNode:
    """Implements what pod workers need (see podworker.NodeServices) and runs everything else."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.config = cfg
        self.started_at = time.time()
        self.stop = threading.Event()
        self.kube = Kube(make_api_client(cfg.kubeconfig))
        self.images = ImageMap.load(cfg.images_file)
        self.ipam = netns.IPAllocator(cfg.pod_cidr, cfg.node_ip)
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()
        self.lock = threading.Lock()
        self.hosts = HostsBook()
        self.proxy = ServiceProxy(host_ips=(cfg.node_ip,))
        self.registration = NodeRegistration(cfg, self.kube, self.stop)
        self.services = Informer("services", self.kube.core.list_service_for_all_namespaces, self.kube.to_dict,
                                 self._on_network_change, self.stop)
        self.slices = Informer("endpointslices", self.kube.discovery.list_endpoint_slice_for_all_namespaces,
                               self.kube.to_dict, self._on_network_change, self.stop)
        self.pods = Informer("pods", self.kube.core.list_pod_for_all_namespaces, self.kube.to_dict, self._on_pod,
                             self.stop, field_selector=f"spec.nodeName={cfg.name}")
        self.kubelet: KubeletServer | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def run(self) -> None:
        self._clean_leftovers()
        self.registration.register()
        self.registration.start()
        cert, key = serving_cert(self.config.pki_dir, self.config.name, self.config.node_ip)
        self.kubelet = KubeletServer(self.config.node_ip, self.config.kubelet_port, cert, key, self._log_target).start()
        self.services.start()
        self.slices.start()
        self.services.synced.wait(30)
        self.slices.synced.wait(30)
        self.pods.start()
        threading.Thread(target=self._remove_orphan_pod_dirs, name="orphan-dirs", daemon=True).start()
        log.info("node %s ready (pods on %s, kubelet API on %s:%s)", self.config.name, self.config.bridge,
                 self.config.node_ip, self.config.kubelet_port)
        self.stop.wait()

    def shutdown(self) -> None:
        """Stop every pod's processes, remove netns and ClusterIP addresses, mark the node NotReady."""
        self.stop.set()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.stop_now.set()
            w.wake.set()
        for w in workers:
            w.thread.join(timeout=15)
        self.proxy.close()
        if self.kubelet is not None:
            self.kubelet.close()
        try:
            self.registration.post_status(ready=False)
        except Exception as exc:
            log.warning("could not mark node NotReady: %r", exc)

    def _clean_leftovers(self) -> None:
        for uid in netns.leftover_sandboxes():
            log.info("removing leftover sandbox of pod %s", uid)
            netns.delete_sandbox(uid)

    # -- pods -------------------------------------------------------------------------------------
    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker is not None:
                    worker.gone()
                return
            if worker is not None:
                worker.update(pod)
                return
            if uid in self.finished:
                return
            phase = (pod.get("status") or {}).get("phase")
            if phase in TERMINAL:
                # Finished before this node process started: never run again; honour a deletion.
                if pod["metadata"].get("deletionTimestamp"):
                    self._delete_now(pod)
                return
            worker = PodWorker(pod, self)
            self.workers[uid] = worker
        worker.start()

    def _delete_now(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.kube.core.delete_namespaced_pod(meta["name"], meta["namespace"], grace_period_seconds=0)
        except client.ApiException as exc:
            if exc.status != 404:
                log.warning("could not delete %s/%s: %s", meta["namespace"], meta["name"], exc.reason)

    def worker_done(self, uid: str) -> None:
        with self.lock:
            self.workers.pop(uid, None)
            self.finished.add(uid)

    def mount_targets_in_use(self, except_uid: str) -> set[str]:
        with self.lock:
            return {t for uid, w in self.workers.items() if uid != except_uid for t in w.mount_targets}

    def base_env(self, namespace: str) -> dict[str, str]:
        env = service_link_env(self.services.snapshot(), namespace)
        # In-cluster clients need these even before the Service list has synced.
        env.setdefault("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        env.setdefault("KUBERNETES_SERVICE_PORT", "443")
        return env

    def _log_target(self, namespace: str, pod: str, container: str) -> LogTarget | None:
        with self.lock:
            worker = next((w for w in self.workers.values() if (w.namespace, w.name) == (namespace, pod)), None)
        runner = worker.runner(container) if worker else None
        if runner is None:
            return self._finished_log_target(namespace, pod, container)
        # Waiting to restart: the current file holds the last terminated run, which is what
        # `--previous` means for the kubelet too.
        waiting = runner.proc is None and runner.record.last_terminated is not None
        previous = runner.log_file if waiting else runner.previous_log
        return LogTarget(runner.log_file, previous, lambda: runner.proc is not None)

    def _finished_log_target(self, namespace: str, pod: str, container: str) -> LogTarget | None:
        """Logs of a pod that finished before this node process started (its folder is still there)."""
        obj = self.pods.cache.get(f"{namespace}/{pod}")
        if obj is None:
            return None
        logs = self.config.pod_dir(obj["metadata"]["uid"]) / "logs"
        current = logs / f"{container}.log"
        if not current.exists():
            return None
        return LogTarget(current, logs / f"{container}.previous.log", lambda: False)

    def _remove_orphan_pod_dirs(self) -> None:
        """Folders of pods deleted while the node was down (once the pod list has synced)."""
        self.pods.synced.wait(60)
        known = {obj["metadata"]["uid"] for obj in self.pods.snapshot()}
        root = self.config.pod_dir("x").parent
        for path in root.iterdir() if root.exists() else []:
            # Only folders from before this process: a pod created since the list has its own worker.
            if path.name not in known and path.name not in self.workers and path.stat().st_mtime < self.started_at:
                log.info("removing folder of deleted pod %s", path.name)
                shutil.rmtree(path, ignore_errors=True)

    # -- network ----------------------------------------------------------------------------------
    def hosts_changed(self, uid: str, addr: PodAddr | None, hosts_file: Path | None) -> None:
        owner = None
        if hosts_file is not None:
            with self.lock:
                worker = self.workers.get(uid)
            if worker is not None and worker.ip:
                owner = PodAddr.from_pod(worker.pod, worker.ip)
        if self.hosts.set_pod(uid, addr, hosts_file, owner) or (hosts_file and uid not in self.hosts.written):
            self.hosts.rewrite(service_addrs(self.services.snapshot(), self.slices.snapshot()))

    def _on_network_change(self, kind: str, obj: dict[str, Any]) -> None:
        svcs, slices = self.services.snapshot(), self.slices.snapshot()
        try:
            self.proxy.update(routes(svcs, slices))
        except Exception as exc:
            log.warning("service proxy update failed: %r", exc)
        self.hosts.rewrite(service_addrs(svcs, slices))
