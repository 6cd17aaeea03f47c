"""Thin access to the API server for the node: objects as plain camelCase dicts."""

from __future__ import annotations

import base64
import logging
from typing import Any

from kubernetes import client, config

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"
"""This client picks json-patch for every PATCH unless told otherwise, so patches name their type."""


def make_api_client(kubeconfig: str) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    # Watches hold connections for minutes; leave room for the per-pod status patches next to them.
    cfg.connection_pool_maxsize = 32
    return client.ApiClient(cfg)


class Kube:
    """The reads and writes the node needs, with 404 mapped to None."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)

    def to_dict(self, obj: Any) -> dict[str, Any]:
        """A client model (or dict) as the API's JSON shape."""
        out: dict[str, Any] = self.api_client.sanitize_for_serialization(obj)
        return out

    def get_secret_bytes(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """The Secret's data, decoded; None when the Secret does not exist."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def get_configmap_bytes(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """The ConfigMap's data and binaryData; None when it does not exist."""
        try:
            cm = self.core.read_namespaced_config_map(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        out = {k: v.encode() for k, v in (cm.data or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        return out

    def get_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return _as_text(self.get_secret_bytes(namespace, name))

    def get_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        return _as_text(self.get_configmap_bytes(namespace, name))

    def request_token(self, pod: dict[str, Any], service_account: str, audience: str | None,
                      expiration: int) -> str:
        """A bound service-account token for ``pod`` through the TokenRequest API."""
        meta = pod["metadata"]
        body = {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": expiration,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]},
            },
        }
        resp = self.core.create_namespaced_service_account_token(service_account, meta["namespace"], body)
        token: str = resp.status.token
        return token

    def event(self, pod: dict[str, Any], reason: str, message: str, kind: str = "Normal",
              component: str = "kubelet", host: str = "") -> None:
        """Record a core/v1 Event on the pod (best effort: events are advisory)."""
        meta = pod["metadata"]
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "reason": reason, "message": message[:1000], "type": kind,
            "source": {"component": component, "host": host}, "count": 1,
            "firstTimestamp": _now(), "lastTimestamp": _now(), "reportingComponent": component,
            "reportingInstance": host,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except client.ApiException as exc:
            log.warning("could not record event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc.reason)


def _now() -> str:
    from kiln_devcluster.node.podstatus import now_iso

    return now_iso()


def _as_text(data: dict[str, bytes] | None) -> dict[str, str] | None:
    return None if data is None else {k: v.decode("utf-8", "replace") for k, v in data.items()}
