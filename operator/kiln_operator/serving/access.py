"""Who may reach a serving target's Triton pods, and with what.

Triton's repository API (load/unload a model version) shares port 8000 with inference, so a network
rule alone cannot keep tenants' pods from loading an ungated version. Two layers:

* a key: serving and canary pods start Triton with the restricted-API flags
  (``kiln_api.contract.triton_restricted_args``) and a per-target key from Secret ``<T>-triton-key``,
  which the operator creates. The key is HMAC(operator key, "<namespace>/<target>"), so the operator
  derives it again instead of reading the Secret back: it needs ``create`` on Secrets, never ``get``,
  and never reads tenants' Secrets. A leaked key opens one target, not all of them.
* NetworkPolicies: inference and metrics ports from the target's namespace and the allowed client
  namespaces; port 8000 from the operator's pods; the canary only from kiln's gate pods and the operator.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kiln_api import contract as c

from kiln_operator.serving.builders import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    ROLE_CANARY,
    ROLE_SERVING,
    ServingTarget,
    key_secret_name,
    selector,
)

Obj = dict[str, Any]
ENV_OPERATOR_KEY = "KILN_TRITON_OPERATOR_KEY"
ENV_CLIENT_NAMESPACES = "KILN_INFERENCE_NAMESPACES"
NS_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Access:
    """The operator's serving-access settings (from its environment, set by the chart)."""

    operator_key: str | None = None
    """Secret the per-target keys derive from; None leaves the repository API unrestricted."""
    operator_namespace: str | None = None
    """Where the operator's pods run (the repository API is opened to them only)."""
    operator_labels: Mapping[str, str] = field(default_factory=lambda: {"app.kubernetes.io/name": "kiln",
                                                                         "app.kubernetes.io/component": "operator"})
    client_namespaces: tuple[str, ...] = ()
    """Namespaces besides the target's own that may call inference."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Access:
        e = os.environ if env is None else env
        clients = tuple(n.strip() for n in e.get(ENV_CLIENT_NAMESPACES, "").split(",") if n.strip())
        return cls(operator_key=e.get(ENV_OPERATOR_KEY) or None, operator_namespace=e.get("POD_NAMESPACE") or None,
                   client_namespaces=clients)

    def target_key(self, t: ServingTarget) -> str | None:
        if not self.operator_key:
            return None
        msg = f"{t.namespace}/{t.name}".encode()
        return hmac.new(self.operator_key.encode(), msg, hashlib.sha256).hexdigest()


def build_key_secret(t: ServingTarget, key: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": key_secret_name(t), "namespace": t.namespace,
                     "labels": {**selector(t, ROLE_SERVING), "app.kubernetes.io/part-of": "kiln"}},
        "type": "Opaque",
        "stringData": {c.TRITON_KEY_SECRET_FIELD: key},
    }


def _ports(*ports: int) -> list[Obj]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _operator_peer(a: Access) -> Obj:
    peer: Obj = {"podSelector": {"matchLabels": dict(a.operator_labels)}}
    if a.operator_namespace:
        peer["namespaceSelector"] = {"matchLabels": {NS_NAME_LABEL: a.operator_namespace}}
    return peer


def _policy(t: ServingTarget, role: str, ingress: list[Obj]) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{t.name}-{role}", "namespace": t.namespace,
                     "labels": {**selector(t, role), "app.kubernetes.io/part-of": "kiln"}},
        "spec": {"podSelector": {"matchLabels": selector(t, role)}, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def build_network_policies(t: ServingTarget, a: Access) -> list[Obj]:
    """Ingress rules for the serving pods and for the canary (everything else is denied)."""
    clients: list[Obj] = [{"podSelector": {}}]  # the target's own namespace
    if a.client_namespaces:
        clients.append({"namespaceSelector": {"matchExpressions": [
            {"key": NS_NAME_LABEL, "operator": "In", "values": list(a.client_namespaces)}]}})
    serving = [{"from": clients, "ports": _ports(HTTP_PORT, GRPC_PORT, METRICS_PORT)},
               {"from": [_operator_peer(a)], "ports": _ports(HTTP_PORT)}]
    # The canary serves an ungated version: only the gate (a kiln pod of this namespace) may query it.
    gate = {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "kiln", "kiln.dev/serving-target": t.name}}}
    canary = [{"from": [gate], "ports": _ports(GRPC_PORT, HTTP_PORT)},
              {"from": [_operator_peer(a)], "ports": _ports(HTTP_PORT)}]
    return [_policy(t, ROLE_SERVING, serving), _policy(t, ROLE_CANARY, canary)]
