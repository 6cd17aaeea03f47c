"""Bad TrainingRuns are refused by the real API server (schema + CEL), with the field named."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from clusterlib import REPO
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from nodekit import namespace
from operatorkit import install_crd

pytestmark = pytest.mark.timeout(180)
GROUP, VERSION, PLURAL = "kiln.dev", "v1alpha1", "trainingruns"


@pytest.fixture(scope="module")
def crd(cluster: Any) -> None:
    install_crd(cluster)


@pytest.fixture
def ns(cluster: Any, crd: None) -> Iterator[str]:
    with namespace(client.CoreV1Api(cluster.api), "adm") as name:
        yield name


def tiny() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _edit(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        node = body["spec"]
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return edit



CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("zero nodes", _edit("training.nodes", 0), "spec.training.nodes"),
    ("negative nodes", _edit("training.nodes", -3), "spec.training.nodes"),
    ("unknown preset", _edit("model.preset", "gpt_9000"), "spec.model.preset"),
    ("zero stage 4", _edit("training.zero", {"stage": 4}), "spec.training.zero.stage"),
    ("param offload without stage 3", _edit("training.zero", {"stage": 2, "offloadParams": True}),
     "spec.training.zero.offloadParams"),
    ("malformed S3 URI", _edit("storage.uri", "s3:/kiln//demo"), "spec.storage.uri"),
    ("inline credentials", _edit("storage.secretAccessKey", "hunter2"), "spec.storage.secretAccessKey"),
    ("secret in another namespace", _edit("storage.secretRef", {"name": "kiln-s3", "namespace": "kube-system"}),
     "spec.storage.secretRef.namespace"),
    ("two budgets", _edit("training.maxTokens", 5000), "spec.training.maxSteps"),
    ("batch not divisible", _edit("training.globalBatchSize", 6), "spec.training.globalBatchSize"),
    # rules declared on the trainer's types and projected onto the spec (kiln_api.rules)
    ("zero learning rate", _edit("training.optimizer.lr", 0.0), "spec.training.optimizer.lr"),
    ("warmup as long as the run", _edit("training.optimizer.warmupSteps", 400), "spec.training.optimizer.warmupSteps"),
    ("kv heads not dividing heads", _edit("model", {"preset": "custom", "custom": {
        "layers": 2, "hidden": 64, "heads": 4, "kvHeads": 3}}), "spec.model.custom.kvHeads"),
    ("bf16 without ZeRO", _edit("training", {**tiny()["spec"]["training"], "precision": "bf16", "zero": {"stage": 0}}),
     "spec.training.precision"),
]


@pytest.mark.parametrize(("what", "edit", "field"), CASES, ids=[c[0] for c in CASES])
def test_rejected_with_field_named(cluster: Any, ns: str, what: str, edit: Callable[[dict[str, Any]], None],
                                   field: str) -> None:
    body = copy.deepcopy(tiny())
    edit(body)
    api = client.CustomObjectsApi(cluster.api)
    with pytest.raises(ApiException) as err:
        # No fieldValidation=Strict: the CEL rules must catch forbidden fields even in the default mode.
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    assert err.value.status == 422, err.value.body
    causes = json.loads(err.value.body)["details"]["causes"]
    assert any(c.get("field") == field for c in causes), f"{what}: no cause names {field}: {causes}"


def test_valid_run_gets_defaults_and_model_is_immutable(cluster: Any, ns: str) -> None:
    api = client.CustomObjectsApi(cluster.api)
    created = api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, tiny())
    spec = created["spec"]
    assert spec["launcher"] == "Auto"
    assert "offloadParams" not in spec["training"]["zero"], "left to the preset: no CRD default masks it"
    assert spec["training"]["maxRestarts"] == 3  # defaults filled by the API server from the schema
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "tiny", {"spec": {"model": {"preset": "gpt_1b"}}})
    assert err.value.status == 422 and "model is immutable" in err.value.body
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "tiny", {"spec": {"training": {"nodes": 3}}})
    assert err.value.status == 422 and "nodes is immutable" in err.value.body
    with pytest.raises(ApiException) as err:  # an optional immutable field may not be added later either
        api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "tiny",
                                           {"spec": {"training": {"processesPerNode": 2}}})
    assert err.value.status == 422 and "processesPerNode is immutable" in err.value.body
    # Applied fields change: the operator recompiles the configs and restarts the gang.
    patched = api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "tiny",
                                                 {"spec": {"training": {"optimizer": {"lr": 0.001}}}})
    assert patched["spec"]["training"]["optimizer"]["lr"] == 0.001
    # What may change mid-run does change: suspend.
    patched = api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "tiny", {"spec": {"suspend": True}})
    assert patched["spec"]["suspend"] is True


def test_printer_columns_and_short_name(cluster: Any, ns: str) -> None:
    client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, tiny())
    out = cluster.kubectl("get", "tr", "-n", ns).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "STEP", "LOSS", "TOK/S", "ETA", "AGE"]
