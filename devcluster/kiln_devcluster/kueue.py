"""Kueue (job queueing, quotas, preemption) as a host process, wired as its Deployment would be.

- Its controller-manager reads ``<state>/kueue/config.yaml``: only the ``batch/job`` and
  ``kubeflow.org/pytorchjob`` integrations, jobs without the queue-name label left alone, no leader
  election, no visibility server, and no internal cert management: the webhook serves a certificate
  issued by the cluster CA (pki.py ``kueue-webhook``), copied into its cert folder before it starts.
- The API server reaches the webhooks (admission and CRD conversion) through Service
  ``kueue-system/kueue-webhook-service`` whose manual Endpoints point at the process's port on the
  bridge address, as for the training-operator (trainingop.py).
- CRDs and webhook configurations come from the module source build.sh copied; the Job and
  PyTorchJob webhooks get an objectSelector on the queue-name label, so a Job that Kueue would not
  manage anyway (every prepare/export Job) never depends on Kueue being up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from kiln_devcluster.components import KUEUE_PROBE, NODE_IP, Ctx

NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"
WEBHOOK_PORT = 19444
METRICS = "127.0.0.1:18082"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
WEBHOOK_CERT = "kueue-webhook"
"""pki.py cert name of the webhook's serving certificate."""
FRAMEWORKS = ("batch/job", "kubeflow.org/pytorchjob")
_QUEUED_KINDS = frozenset({"jobs", "pytorchjobs"})
"""Resources of the integrations whose webhooks only see objects with the queue-name label."""
_CONVERTED = ("clusterqueues", "cohorts", "localqueues", "workloads", "multikueueclusters")
"""CRDs upstream serves through its conversion webhook (config/components/crd/kustomization.yaml)."""
_BUILD_SH = Path(__file__).resolve().parents[1] / "build.sh"


def disabled() -> str | None:
    """A reason to leave Kueue out, or None. Opt-in (KILN_KUEUE=1) until its integration test has run
    in the whole suite: it joined `up` too late in this stop to be part of the validated cluster."""
    return None if os.environ.get("KILN_KUEUE") == "1" else "not enabled (KILN_KUEUE=1 starts it)"


def crds_dir() -> Path:
    """The folder with Kueue's CRDs and webhook manifests copied from its module source."""
    out = subprocess.run([str(_BUILD_SH), "--print-kueue-crds"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def state_dir(c: Ctx) -> Path:
    return c.paths.root / "kueue"


def config(cert_dir: Path) -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2)."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": KUEUE_PROBE},
        "metrics": {"bindAddress": METRICS},
        "webhook": {"port": WEBHOOK_PORT, "host": "0.0.0.0", "certDir": str(cert_dir)},  # noqa: S104 — pods' bridge
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": list(FRAMEWORKS)},
        # The on-demand pending-workloads API needs an APIService registration the dev cluster skips.
        "featureGates": {"VisibilityOnDemand": False},
    }


METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")
"""Hard-coded in Kueue's main for its metrics endpoint when internal cert management is off."""


def _install_cert(c: Ctx, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for src, name in ((c.pki.key(WEBHOOK_CERT), "tls.key"), (c.pki.crt(WEBHOOK_CERT), "tls.crt")):
        shutil.copyfile(src, folder / name)
        (folder / name).chmod(0o600)


def prepare(c: Ctx) -> None:
    """Write the config and put the CA-issued certificate where Kueue reads it (webhook and metrics)."""
    root = state_dir(c)
    _install_cert(c, root / "certs")
    _install_cert(c, METRICS_CERT_DIR)
    (root / "config.yaml").write_text(yaml.safe_dump(config(root / "certs"), sort_keys=False))


def argv(c: Ctx) -> list[str]:
    return [str(c.bin / "kueue"), f"--config={state_dir(c) / 'config.yaml'}",
            f"--kubeconfig={c.pki.kubeconfig('kueue')}", "--zap-log-level=info"]


def _service_ref(path: str) -> dict[str, Any]:
    return {"service": {"name": SERVICE, "namespace": NAMESPACE, "port": 443, "path": path}}


def _ca_bundle(c: Ctx) -> str:
    import base64

    return base64.b64encode(c.pki.ca_crt.read_bytes()).decode()


def _keep(hook: dict[str, Any]) -> bool:
    """Webhooks of Kueue's own kinds and of the two integrations it is configured with."""
    for rule in hook.get("rules") or []:
        groups, resources = set(rule.get("apiGroups") or []), set(rule.get("resources") or [])
        if "kueue.x-k8s.io" in groups or (resources & _QUEUED_KINDS and groups & {"batch", "kubeflow.org"}):
            return True
    return False


def webhook_configs(upstream: list[dict[str, Any]], ca_bundle: str) -> list[dict[str, Any]]:
    """Upstream's webhook configurations, renamed for kiln, pointed at our Service with the cluster CA."""
    out = []
    for doc in upstream:
        hooks = []
        for hook in doc.get("webhooks") or []:
            if not _keep(hook):
                continue
            hook = {**hook, "clientConfig": {**_service_ref(hook["clientConfig"]["service"]["path"]),
                                             "caBundle": ca_bundle}}
            if any(set(r.get("resources") or []) & _QUEUED_KINDS for r in hook.get("rules") or []):
                hook["objectSelector"] = {"matchExpressions": [{"key": QUEUE_LABEL, "operator": "Exists"}]}
            hooks.append(hook)
        name = "kueue-" + doc["metadata"]["name"]
        out.append({"apiVersion": doc["apiVersion"], "kind": doc["kind"],
                    "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "kiln-devcluster"}},
                    "webhooks": hooks})
    return out


def with_conversion(crd: dict[str, Any], ca_bundle: str) -> dict[str, Any]:
    """Upstream's CRD; the ones it converts through its webhook get that conversion, with the cluster CA."""
    if crd["spec"]["names"]["plural"] not in _CONVERTED:
        return crd
    conversion = {"strategy": "Webhook", "webhook": {
        "clientConfig": {**_service_ref("/convert"), "caBundle": ca_bundle}, "conversionReviewVersions": ["v1"]}}
    return {**crd, "spec": {**crd["spec"], "conversion": conversion}}


def base_manifests(c: Ctx, crds: Path) -> list[dict[str, Any]]:
    """Namespace, webhook Service + Endpoints, webhook configurations and CRDs."""
    labels = {"app.kubernetes.io/part-of": "kiln-devcluster"}
    port = {"name": "webhook-server", "port": WEBHOOK_PORT, "protocol": "TCP"}
    ca = _ca_bundle(c)
    upstream_hooks = [d for d in yaml.safe_load_all((crds / "webhooks.yaml").read_text()) if d]
    crd_docs = [yaml.safe_load(p.read_text()) for p in sorted(crds.glob("kueue.x-k8s.io_*.yaml"))]
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": labels}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": labels},
         "spec": {"ports": [{"name": "webhook-server", "port": 443, "targetPort": WEBHOOK_PORT}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": labels},
         "subsets": [{"addresses": [{"ip": NODE_IP}], "ports": [port]}]},
        *webhook_configs(upstream_hooks, ca),
        *(with_conversion(d, ca) for d in crd_docs),
    ]


def manifests_json(c: Ctx, crds: Path) -> str:
    return "\n---\n".join(json.dumps(m) for m in base_manifests(c, crds))
