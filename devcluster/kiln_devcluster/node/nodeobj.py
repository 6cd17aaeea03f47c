"""The Node object: registration, status heartbeats and the Lease in kube-node-lease."""

from __future__ import annotations

import logging
import platform
import threading
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from kiln_devcluster.node.config import NodeConfig
from kiln_devcluster.node.kube import MERGE_PATCH, Kube
from kiln_devcluster.node.podstatus import now_iso

log = logging.getLogger(__name__)
STATUS_EVERY = 10.0  # seconds between Node status heartbeats (the kubelet reports at least every 5 min)


def node_status(cfg: NodeConfig, ready: bool, since: str) -> dict[str, Any]:
    """``status`` of the Node (capacity, addresses, conditions, kubelet endpoint)."""
    capacity = {"cpu": cfg.cpu, "memory": cfg.memory, "pods": str(cfg.pods), "ephemeral-storage": "100Gi"}
    if cfg.gpus:
        capacity["nvidia.com/gpu"] = str(cfg.gpus)
    now = now_iso()

    def cond(ctype: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        return {"type": ctype, "status": "True" if ok else "False", "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": since}

    return {
        "capacity": capacity,
        "allocatable": dict(capacity),
        # Only an InternalIP: the API server would try to resolve a Hostname address first.
        "addresses": [{"type": "InternalIP", "address": cfg.node_ip}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.kubelet_port}},
        "conditions": [
            cond("MemoryPressure", False, "KubeletHasSufficientMemory", "kiln process node has sufficient memory"),
            cond("DiskPressure", False, "KubeletHasNoDiskPressure", "kiln process node has no disk pressure"),
            cond("PIDPressure", False, "KubeletHasSufficientPID", "kiln process node has sufficient PID"),
            cond("Ready", ready, "KubeletReady" if ready else "KubeletNotReady",
                 "kiln process node is posting ready status" if ready else "kiln process node is stopping"),
        ],
        "nodeInfo": {
            "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
            "operatingSystem": "linux", "osImage": "kiln process node", "kernelVersion": platform.release(),
            "containerRuntimeVersion": "kiln-process://0.1", "kubeletVersion": "v0.0.0-kiln",
            "kubeProxyVersion": "v0.0.0-kiln", "machineID": "", "systemUUID": "", "bootID": "",
        },
    }


class NodeRegistration:
    """Creates/updates the Node and keeps its Lease and Ready condition fresh."""

    def __init__(self, cfg: NodeConfig, kube: Kube, stop: threading.Event) -> None:
        self.cfg = cfg
        self.kube = kube
        self.stop = stop
        self.since = now_iso()
        self.thread = threading.Thread(target=self._loop, name="node-heartbeat", daemon=True)

    def register(self) -> None:
        labels = {"kubernetes.io/hostname": self.cfg.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": node_status(self.cfg, True, self.since)["nodeInfo"]["architecture"],
                  "kiln.dev/process-node": "true", **self.cfg.extra_labels}
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.cfg.name, "labels": labels}}
        try:
            self.kube.core.create_node(body)
            log.info("registered node %s", self.cfg.name)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            self.kube.core.patch_node(self.cfg.name, {"metadata": {"labels": labels}}, _content_type=MERGE_PATCH)
        self.post_status(ready=True)
        self.renew_lease()

    def post_status(self, ready: bool) -> None:
        self.kube.core.patch_node_status(self.cfg.name, {"status": node_status(self.cfg, ready, self.since)},
                                         _content_type=MERGE_PATCH)

    def renew_lease(self) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"holderIdentity": self.cfg.name, "leaseDurationSeconds": self.cfg.lease_seconds, "renewTime": now}
        try:
            self.kube.coordination.patch_namespaced_lease(self.cfg.name, "kube-node-lease", {"spec": spec},
                                                         _content_type=MERGE_PATCH)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            node = self.kube.core.read_node(self.cfg.name)
            body = {"metadata": {"name": self.cfg.name, "namespace": "kube-node-lease",
                                 "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.cfg.name,
                                                      "uid": node.metadata.uid}]},
                    "spec": spec}
            self.kube.coordination.create_namespaced_lease("kube-node-lease", body)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        renew_every = self.cfg.lease_seconds / 4
        next_status = 0.0
        elapsed = 0.0
        while not self.stop.wait(renew_every):
            elapsed += renew_every
            try:
                self.renew_lease()
                if elapsed >= next_status:
                    self.post_status(ready=True)
                    next_status = elapsed + STATUS_EVERY
            except Exception as exc:  # the API server may restart; keep beating
                log.warning("node heartbeat failed: %r", exc)
