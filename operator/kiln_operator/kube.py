"""A small dict-in, dict-out Kubernetes client: create-or-adopt, get, delete, list.

Builders return plain dicts; this module sends them as they are through the official client's
``ApiClient.call_api`` so no typed model classes sit between a golden YAML file and the API server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kiln_operator.metrics import API_REQUESTS


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the REST API."""

    prefix: str
    """``api/v1`` or ``apis/<group>/<version>``."""
    plural: str
    """Resource name in URLs."""


KINDS: dict[tuple[str, str], Kind] = {
    ("v1", "ConfigMap"): Kind("api/v1", "configmaps"),
    ("v1", "Service"): Kind("api/v1", "services"),
    ("v1", "ServiceAccount"): Kind("api/v1", "serviceaccounts"),
    ("v1", "Pod"): Kind("api/v1", "pods"),
    ("v1", "Secret"): Kind("api/v1", "secrets"),
    ("v1", "Event"): Kind("api/v1", "events"),  # list only: why a controller could not create a pod  # create only: the operator never reads Secrets
    ("networking.k8s.io/v1", "NetworkPolicy"): Kind("apis/networking.k8s.io/v1", "networkpolicies"),
    ("batch/v1", "Job"): Kind("apis/batch/v1", "jobs"),
    ("apps/v1", "Deployment"): Kind("apis/apps/v1", "deployments"),
    ("rbac.authorization.k8s.io/v1", "Role"): Kind("apis/rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): Kind("apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    ("kubeflow.org/v1", "PyTorchJob"): Kind("apis/kubeflow.org/v1", "pytorchjobs"),
    ("kiln.dev/v1alpha1", "TrainingRun"): Kind("apis/kiln.dev/v1alpha1", "trainingruns"),
    ("kueue.x-k8s.io/v1beta2", "Workload"): Kind("apis/kueue.x-k8s.io/v1beta2", "workloads"),  # read only
}


# Deserialize every success answer as plain JSON (dicts), never into model classes.
_OBJECT = {200: "object", 201: "object", 202: "object"}


class AdoptionConflict(RuntimeError):
    """An object with the child's fixed name exists but belongs to someone else."""


class Kube:
    """Thin wrapper over one ApiClient (thread-safe for concurrent handlers)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def _call(self, method: str, path: str, body: Any = None, query: list[tuple[str, str]] | None = None,
              content_type: str = "application/json") -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        API_REQUESTS.labels(verb=method).inc()
        return self.api.call_api(
            path, method, query_params=query or [], header_params=headers, body=body,
            response_types_map=_OBJECT, auth_settings=["BearerToken"], _return_http_data_only=True,
        )

    @staticmethod
    def _path(api_version: str, kind: str, namespace: str, name: str = "") -> str:
        k = KINDS[(api_version, kind)]
        path = f"/{k.prefix}/namespaces/{namespace}/{k.plural}"
        return f"{path}/{name}" if name else path

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            out: dict[str, Any] = self._call("GET", self._path(api_version, kind, namespace, name))
            return out
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def create_or_adopt(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create ``obj``; if its name is taken by a child of the same owner, return that one.

        Returns (object, created). Raises AdoptionConflict when the existing object has another owner
        (never silently take over someone else's object).
        """
        meta = obj["metadata"]
        path = self._path(obj["apiVersion"], obj["kind"], meta["namespace"])
        try:
            return self._call("POST", path, body=obj), True
        except ApiException as e:
            if e.status != 409:
                raise
        existing = self.get(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        if existing is None:  # deleted between our POST and GET: the caller retries on its next tick
            raise AdoptionConflict(f"{obj['kind']} {meta['name']} vanished while adopting it")
        want = {r["uid"] for r in meta.get("ownerReferences", [])}
        have = {r.get("uid") for r in existing["metadata"].get("ownerReferences", [])}
        if want and not want & have:
            raise AdoptionConflict(f"{obj['kind']} {meta['name']} exists and is owned by someone else")
        return existing, False

    def create(self, obj: dict[str, Any]) -> bool:
        """Create ``obj``; False when its name is taken (never read back: for Secrets)."""
        meta = obj["metadata"]
        try:
            self._call("POST", self._path(obj["apiVersion"], obj["kind"], meta["namespace"]), body=obj)
            return True
        except ApiException as e:
            if e.status != 409:
                raise
            return False

    def delete(self, api_version: str, kind: str, namespace: str, name: str,
               propagation: str = "Background") -> bool:
        """Delete; False when it was already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        try:
            self._call("DELETE", self._path(api_version, kind, namespace, name), body=body)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    def warnings_about(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        """Warning Events whose involved object is `kind` `name` (e.g. a Job's FailedCreate)."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name},type=Warning"
        out = self._call("GET", self._path("v1", "Event", namespace), query=[("fieldSelector", selector)])
        items: list[dict[str, Any]] = out.get("items", [])
        return items

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        out = self._call("GET", self._path(api_version, kind, namespace), query=[("labelSelector", selector)])
        items: list[dict[str, Any]] = out.get("items", [])
        return items

    def has_api(self, group_version: str, plural: str) -> bool:
        """Whether the API server serves ``plural`` in ``group_version`` (e.g. the PyTorchJob CRD)."""
        try:
            out = self._call("GET", f"/apis/{group_version}")
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return any(r.get("name") == plural for r in out.get("resources", []))

    def patch(self, api_version: str, kind: str, namespace: str, name: str, body: dict[str, Any]) -> Any:
        """JSON merge patch (RFC 7386) of one object."""
        return self._call("PATCH", self._path(api_version, kind, namespace, name), body=body,
                          content_type="application/merge-patch+json")

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                     status: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the status subresource; returns the object as written."""
        path = self._path(api_version, kind, namespace, name) + "/status"
        out: dict[str, Any] = self._call("PATCH", path, body={"status": status},
                                         content_type="application/merge-patch+json")
        return out

    def pod_log_tail(self, namespace: str, name: str, lines: int = 5) -> str:
        """The last lines a pod's (first) container wrote; empty when there are none yet."""
        try:
            API_REQUESTS.labels(verb="GET").inc()
            # Raw bytes: the client's own decoding of this text endpoint gives the repr of bytes.
            resp = client.CoreV1Api(self.api).read_namespaced_pod_log(
                name, namespace, tail_lines=lines, _preload_content=False)
        except ApiException as e:
            if e.status in (400, 404):
                return ""
            raise
        return bytes(resp.data).decode("utf-8", errors="replace")
