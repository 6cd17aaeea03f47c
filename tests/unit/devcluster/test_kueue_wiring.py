"""How the dev cluster wires Kueue: its config, and upstream's webhooks/CRDs pointed at our Service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln_devcluster import kueue


def _hook(name: str, group: str, resource: str) -> dict[str, Any]:
    return {"name": name, "admissionReviewVersions": ["v1"], "failurePolicy": "Fail", "sideEffects": "None",
            "clientConfig": {"service": {"name": "webhook-service", "namespace": "system", "path": f"/mutate-{resource}"}},
            "rules": [{"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": [resource]}]}


UPSTREAM = [{
    "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
    "metadata": {"name": "mutating-webhook-configuration"},
    "webhooks": [_hook("mjob.kb.io", "batch", "jobs"), _hook("mpytorchjob.kb.io", "kubeflow.org", "pytorchjobs"),
                 _hook("mtfjob.kb.io", "kubeflow.org", "tfjobs"), _hook("mpod.kb.io", "", "pods"),
                 _hook("mworkload.kb.io", "kueue.x-k8s.io", "workloads")],
}]


def test_config_enables_only_job_and_pytorchjob_and_serves_our_certificate(tmp_path: Path) -> None:
    cfg = kueue.config(tmp_path)
    assert cfg["integrations"]["frameworks"] == ["batch/job", "kubeflow.org/pytorchjob"]
    assert cfg["internalCertManagement"] == {"enable": False}
    assert cfg["webhook"]["certDir"] == str(tmp_path) and cfg["webhook"]["port"] == kueue.WEBHOOK_PORT
    assert cfg["manageJobsWithoutQueueName"] is False


def test_webhooks_keep_kueues_own_and_the_two_integrations_behind_the_queue_label() -> None:
    (doc,) = kueue.webhook_configs(UPSTREAM, "Q0E=")
    hooks = {h["name"]: h for h in doc["webhooks"]}
    assert set(hooks) == {"mjob.kb.io", "mpytorchjob.kb.io", "mworkload.kb.io"}
    for name in ("mjob.kb.io", "mpytorchjob.kb.io"):  # unqueued Jobs never wait on Kueue's webhook
        assert hooks[name]["objectSelector"] == {
            "matchExpressions": [{"key": kueue.QUEUE_LABEL, "operator": "Exists"}]}
    assert "objectSelector" not in hooks["mworkload.kb.io"]
    for hook in hooks.values():
        svc = hook["clientConfig"]["service"]
        assert (svc["name"], svc["namespace"], svc["port"]) == (kueue.SERVICE, kueue.NAMESPACE, 443)
        assert hook["clientConfig"]["caBundle"] == "Q0E="
    assert doc["metadata"]["name"] == "kueue-mutating-webhook-configuration"


def test_converted_crds_get_the_conversion_webhook_and_others_stay_as_upstream() -> None:
    def crd(plural: str) -> dict[str, Any]:
        return {"spec": {"names": {"plural": plural}, "versions": []}}

    workloads = kueue.with_conversion(crd("workloads"), "Q0E=")
    webhook = workloads["spec"]["conversion"]["webhook"]
    assert webhook["clientConfig"]["service"]["path"] == "/convert" and webhook["clientConfig"]["caBundle"] == "Q0E="
    assert "conversion" not in kueue.with_conversion(crd("resourceflavors"), "Q0E=")["spec"]
