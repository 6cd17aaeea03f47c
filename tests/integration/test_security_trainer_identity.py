"""The trainer's identity, with its own token on the real API server: it may patch its run's progress
ConfigMap and nothing else — not the TrainingRun status (usage, cost, phase), not another ConfigMap,
not Secrets. The operator then copies the record it wrote into status.progress."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from clusterlib import REPO
from kiln_api.trainingrun import parse_spec
from kiln_operator.builders.common import Run
from kiln_operator.builders.rbac import build_rbac
from kiln_operator.kube import Kube
from kiln_operator.progress import build_progress_configmap, copy_progress
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from nodekit import namespace
from operatorkit import install_crd

pytestmark = pytest.mark.timeout(180)
GROUP, VERSION, PLURAL = "kiln.dev", "v1alpha1", "trainingruns"


@pytest.fixture
def run(cluster: Any) -> Iterator[Run]:
    install_crd(cluster)
    with namespace(client.CoreV1Api(cluster.api), "trid") as ns:
        body = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
        body["metadata"] = {"name": "tiny"}
        created = client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        r = Run("tiny", ns, created["metadata"]["uid"], parse_spec(body["spec"]))
        kube = Kube(cluster.api)
        for obj in [*build_rbac(r), build_progress_configmap(r),
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tiny-config", "namespace": ns}}]:
            kube.create_or_adopt(obj)
        yield r


def _as_trainer(cluster: Any, run: Run) -> client.ApiClient:
    """An API client holding a token of the run's trainer ServiceAccount (as a trainer pod would)."""
    core = client.CoreV1Api(cluster.api)
    token = core.create_namespaced_service_account_token(
        "tiny-trainer", run.namespace, {"spec": {"expirationSeconds": 600}}).status.token
    cfg = client.Configuration()
    admin = cluster.api.configuration
    cfg.host, cfg.ssl_ca_cert, cfg.verify_ssl = admin.host, admin.ssl_ca_cert, admin.verify_ssl
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)


def _status(call: Any) -> int:
    try:
        call()
    except ApiException as e:
        return int(e.status)
    return 200


def test_the_trainer_writes_its_progress_configmap_and_nothing_else(cluster: Any, run: Run) -> None:
    trainer = _as_trainer(cluster, run)
    core, custom, ns = client.CoreV1Api(trainer), client.CustomObjectsApi(trainer), run.namespace
    record = {"step": 7, "loss": 3.25, "tokensPerSecond": 800}
    assert _status(lambda: core.patch_namespaced_config_map(
        "tiny-progress", ns, {"data": {"progress.json": json.dumps(record)}})) == 200
    refused = {
        "status": _status(lambda: custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PLURAL, "tiny", {"status": {"gpuHours": 0, "estimatedCost": 0}})),
        "spec": _status(lambda: custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "tiny", {"spec": {"budget": {"maxGpuHours": 1e9}}})),
        "other configmap": _status(lambda: core.patch_namespaced_config_map("tiny-config", ns, {"data": {"x": "1"}})),
        "secrets": _status(lambda: core.list_namespaced_secret(ns)),
        "create configmap": _status(lambda: core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}})),
    }
    assert refused == dict.fromkeys(refused, 403)

    patch: dict[str, Any] = {}
    copy_progress(Kube(cluster.api), run, patch)  # what the operator's Training step does
    assert patch == {"progress": record}
