"""The training-operator's validating webhook, wired up as on a real cluster.

The operator (v1.9) will not start its controllers before its cert rotator has
(1) filled the Secret ``kubeflow/training-operator-webhook-cert``, (2) seen the
serving certificate mounted in ``/tmp/k8s-webhook-server/serving-certs`` and
(3) injected its CA into the ValidatingWebhookConfiguration
``validator.training-operator.kubeflow.org``. In a pod the kubelet mounts the
Secret; here `sync_webhook_certs` copies it to that folder while the operator
starts. The API server reaches the webhook through Service
``kubeflow/training-operator`` whose manual Endpoints point at the operator's
port on the bridge address (the API server resolves webhook services through
endpoints: ``--enable-aggregator-routing``).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from kiln_devcluster.apiclient import get_json
from kiln_devcluster.components import NODE_IP, TRAINING_OPERATOR_WEBHOOK_PORT, Ctx

NAMESPACE = "kubeflow"
SECRET = "training-operator-webhook-cert"
SERVICE = "training-operator"
WEBHOOK_CONFIG = "validator.training-operator.kubeflow.org"
CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")
"""Hard-coded in the operator (pkg/cert)."""


def manifests() -> list[dict[str, Any]]:
    """Secret placeholder, webhook Service + Endpoints and the webhook configuration (PyTorchJob only)."""
    labels = {"app.kubernetes.io/part-of": "kiln-devcluster"}
    port = {"name": "webhook-server", "port": TRAINING_OPERATOR_WEBHOOK_PORT, "protocol": "TCP"}
    return [
        # Empty: the operator's rotator refuses to start without the Secret and fills it itself.
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NAMESPACE, "labels": labels}},
        {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": labels},
            "spec": {"ports": [{"name": "webhook-server", "port": 443, "targetPort": TRAINING_OPERATOR_WEBHOOK_PORT}]},
        },
        {
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": labels},
            "subsets": [{"addresses": [{"ip": NODE_IP}], "ports": [port]}],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIG, "labels": labels},
            "webhooks": [
                {
                    "name": "validator.pytorchjob.training-operator.kubeflow.org",
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": {
                        "service": {"name": SERVICE, "namespace": NAMESPACE, "port": 443,
                                    "path": "/validate-kubeflow-org-v1-pytorchjob"},
                    },
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "rules": [{"apiGroups": ["kubeflow.org"], "apiVersions": ["v1"],
                               "operations": ["CREATE", "UPDATE"], "resources": ["pytorchjobs"]}],
                }
            ],
        },
    ]


def sync_webhook_certs(ctx: Ctx) -> None:
    """Copy the rotator's serving certificate from its Secret to CERT_DIR (the kubelet's job in a pod)."""
    secret = get_json(ctx, f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}")
    data = (secret or {}).get("data") or {}
    if "tls.crt" not in data or "tls.key" not in data:
        return
    CERT_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("tls.key", "tls.crt"):  # the rotator waits for tls.crt: write it last
        content = base64.b64decode(data[name])
        path = CERT_DIR / name
        if not path.exists() or path.read_bytes() != content:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(content)
            tmp.chmod(0o600)
            tmp.replace(path)
