"""The embedded cluster is a real Kubernetes: API server validation, controllers, kubectl, S3."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest
from clusterlib import REPO, Cluster, devcluster
from kiln_devcluster.nodes import node_specs
from kiln_devcluster.paths import StatePaths
from kubernetes import client as k8s_client
from kubernetes.client.rest import ApiException
from waiting import wait_for

pytestmark = pytest.mark.timeout(300)

GROUP = "kiln-test.dev"


def _pinned_k8s_version() -> str:
    """The version build.sh pins (what the built server must report)."""
    text = (REPO / "devcluster" / "build.sh").read_text()
    found = re.search(r"^K8S_VERSION=(v\d+\.\d+\.\d+)$", text, re.M)
    assert found, "build.sh has no K8S_VERSION=vX.Y.Z line"
    return found.group(1)


def _range_crd(plural: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["minSize", "maxSize"],
                "properties": {
                    "minSize": {"type": "integer", "minimum": 0},
                    "maxSize": {"type": "integer"},
                },
                "x-kubernetes-validations": [
                    {
                        "rule": "self.minSize <= self.maxSize",
                        "message": "minSize must not exceed maxSize",
                        "fieldPath": ".minSize",
                    }
                ],
            }
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": "SizeRange"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


@pytest.fixture
def range_crd(cluster: Cluster) -> Iterator[str]:
    """A fresh CRD (unique plural) with a structural schema and a CEL rule; deleted afterwards."""
    plural = f"sizeranges{uuid.uuid4().hex[:6]}"
    ext = k8s_client.ApiextensionsV1Api(cluster.api)
    ext.create_custom_resource_definition(_range_crd(plural))

    def established() -> bool:
        crd = ext.read_custom_resource_definition(f"{plural}.{GROUP}")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_for(established, 30, f"CRD {plural}.{GROUP} Established")
    yield plural
    ext.delete_custom_resource_definition(f"{plural}.{GROUP}")


def _create_range(cluster: Cluster, plural: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/v1", "kind": "SizeRange", "metadata": {"name": name}, "spec": spec}
    api = k8s_client.CustomObjectsApi(cluster.api)
    # A freshly established CRD can take a moment to be served; listing answers 404 until then.
    wait_for(lambda: api.list_namespaced_custom_object(GROUP, "v1", "default", plural) is not None, 30, f"{plural} served")
    result: dict[str, Any] = api.create_namespaced_custom_object(GROUP, "v1", "default", plural, body)
    return result


def test_cel_rule_rejects_invalid_object_naming_the_field(cluster: Cluster, range_crd: str) -> None:
    ok = _create_range(cluster, range_crd, "fine", {"minSize": 1, "maxSize": 3})
    assert ok["spec"] == {"minSize": 1, "maxSize": 3}
    with pytest.raises(ApiException) as caught:
        _create_range(cluster, range_crd, "inverted", {"minSize": 5, "maxSize": 2})
    assert caught.value.status == 422
    body = json.loads(caught.value.body)
    causes = body["details"]["causes"]
    assert any(c["field"] == "spec.minSize" and "minSize must not exceed maxSize" in c["message"] for c in causes), causes


def test_structural_schema_rejects_wrong_type_naming_the_field(cluster: Cluster, range_crd: str) -> None:
    with pytest.raises(ApiException) as caught:
        _create_range(cluster, range_crd, "typo", {"minSize": "one", "maxSize": 2})
    assert caught.value.status == 422
    causes = json.loads(caught.value.body)["details"]["causes"]
    assert any(c["field"] == "spec.minSize" for c in causes), causes


def test_kubectl_version_reports_the_built_server(cluster: Cluster) -> None:
    out = cluster.kubectl("version", "-o", "json")
    versions = json.loads(out.stdout)
    pinned = _pinned_k8s_version()
    assert versions["serverVersion"]["gitVersion"] == pinned
    assert versions["clientVersion"]["gitVersion"] == pinned
    assert versions["serverVersion"]["minor"] == pinned.split(".")[1]


def test_every_node_is_a_ready_kubelet_on_containerd(cluster: Cluster) -> None:
    """What `kubectl get nodes -o wide` shows: each configured node Ready, running containerd."""
    wanted = {n.name for n in node_specs(StatePaths(cluster.state_dir))}

    def nodes() -> dict[str, dict[str, Any]]:
        items = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        return {n["metadata"]["name"]: n for n in items}

    def ready() -> bool:
        found = nodes()
        return wanted <= set(found) and all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in found[name]["status"]["conditions"])
            for name in wanted)

    wait_for(ready, 90, f"nodes {sorted(wanted)} Ready")
    for name in wanted:
        assert nodes()[name]["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


def test_controller_manager_runs_namespace_controllers(cluster: Cluster) -> None:
    """A new namespace gets its default ServiceAccount and root CA ConfigMap from kube-controller-manager."""
    core = k8s_client.CoreV1Api(cluster.api)
    ns = f"kiln-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": ns}})
    try:
        wait_for(lambda: core.read_namespaced_service_account("default", ns), 30, f"ServiceAccount default in {ns}")
        ca = wait_for(lambda: core.read_namespaced_config_map("kube-root-ca.crt", ns), 30, "kube-root-ca.crt")
        assert ca.data["ca.crt"] == (cluster.state_dir / "pki" / "ca.crt").read_text()
        # TokenRequest is served with the signing key the API server was given.
        token = core.create_namespaced_service_account_token(
            "default", ns, {"spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"]}}
        )
        assert token.status.token.count(".") == 2
    finally:
        core.delete_namespace(ns)


def test_s3_service_points_pods_at_the_host_s3_server(cluster: Cluster) -> None:
    """The `minio` Service's Endpoints are mirrored into an EndpointSlice by the controller-manager."""
    disc = k8s_client.DiscoveryV1Api(cluster.api)

    def mirrored() -> list[str]:
        slices = disc.list_namespaced_endpoint_slice("kiln-system", label_selector="kubernetes.io/service-name=minio")
        return [a for s in slices.items for e in s.endpoints or [] for a in e.addresses]

    assert wait_for(mirrored, 30, "EndpointSlice of Service minio") == ["10.88.0.1"]
    assert cluster.s3["in_cluster_endpoint_url"] == "http://minio.kiln-system.svc:9000"


def test_s3_bucket_round_trip_and_conditional_put(cluster: Cluster, s3_bucket: str) -> None:
    s3 = cluster.s3_client()
    s3.put_object(Bucket=s3_bucket, Key="a/b.txt", Body=b"kiln", IfNoneMatch="*")
    assert s3.get_object(Bucket=s3_bucket, Key="a/b.txt")["Body"].read() == b"kiln"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.put_object(Bucket=s3_bucket, Key="a/b.txt", Body=b"other", IfNoneMatch="*")
    assert caught.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.get_object(Bucket=s3_bucket, Key="a/b.txt")["Body"].read() == b"kiln"


def _pytorchjob(name: str) -> dict[str, Any]:
    def replica(count: int) -> dict[str, Any]:
        container = {"name": "pytorch", "image": "python:3.11", "command": ["python", "-c", "pass"]}
        return {"replicas": count, "restartPolicy": "Never", "template": {"spec": {"containers": [container]}}}

    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name},
        "spec": {"pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(1)}},
    }


def _env(pod: Any) -> dict[str, str]:
    return {e.name: e.value for e in pod.spec.containers[0].env or []}


def test_training_operator_creates_pytorchjob_pods_and_gc_removes_them(cluster: Cluster) -> None:
    """The real training-operator turns a PyTorchJob into pods with the torch.distributed env;
    deleting the job lets the garbage collector remove them."""
    if not (cluster.bin / "training-operator.v1").exists():
        pytest.skip("training-operator is not built")
    name = f"pt-{uuid.uuid4().hex[:6]}"
    custom = k8s_client.CustomObjectsApi(cluster.api)
    core = k8s_client.CoreV1Api(cluster.api)
    custom.create_namespaced_custom_object("kubeflow.org", "v1", "default", "pytorchjobs", _pytorchjob(name))
    selector = f"training.kubeflow.org/job-name={name}"
    try:
        pods = wait_for(
            lambda: (lambda items: items if len(items) == 2 else None)(
                core.list_namespaced_pod("default", label_selector=selector).items
            ),
            60, f"2 pods of PyTorchJob {name}",
        )
        by_name = {p.metadata.name: p for p in pods}
        worker = _env(by_name[f"{name}-worker-0"])
        assert worker["MASTER_ADDR"] == f"{name}-master-0"
        assert (worker["WORLD_SIZE"], worker["RANK"]) == ("2", "1")
        assert _env(by_name[f"{name}-master-0"])["RANK"] == "0"
    finally:
        custom.delete_namespaced_custom_object(
            "kubeflow.org", "v1", "default", "pytorchjobs", name, propagation_policy="Foreground"
        )
    wait_for(
        lambda: not core.list_namespaced_pod("default", label_selector=selector).items, 60,
        f"pods of {name} garbage-collected",
    )


def test_training_operator_webhook_rejects_an_invalid_pytorchjob(cluster: Cluster) -> None:
    """The API server calls the operator's validating webhook (Service -> endpoints on the bridge)."""
    if not (cluster.bin / "training-operator.v1").exists():
        pytest.skip("training-operator is not built")
    job = _pytorchjob(f"pt-bad-{uuid.uuid4().hex[:6]}")
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["name"] = "not-pytorch"
    custom = k8s_client.CustomObjectsApi(cluster.api)
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object("kubeflow.org", "v1", "default", "pytorchjobs", job)
    assert caught.value.status == 403
    assert "validator.pytorchjob.training-operator.kubeflow.org" in caught.value.body
    assert "containers" in caught.value.body and "pytorch" in caught.value.body


def test_second_up_is_a_quick_no_op(cluster: Cluster) -> None:
    pids_before = sorted(p.read_text() for p in (cluster.state_dir / "run").glob("*.pid"))
    start = time.monotonic()
    out = devcluster("up")
    took = time.monotonic() - start
    assert "already up" in out.stdout
    assert took < 10, f"a second `up` took {took:.1f}s"
    assert sorted(p.read_text() for p in (cluster.state_dir / "run").glob("*.pid")) == pids_before
