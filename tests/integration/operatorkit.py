"""Helpers for operator integration tests: run the operator in-process, make runs, read them."""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from clusterlib import REPO
from kopf.testing import KopfRunner
from kubernetes import client
from waiting import wait_for

GROUP, VERSION, PLURAL = "kiln.dev", "v1alpha1", "trainingruns"


@contextmanager
def operator(cluster: Any, namespace: str, interval: float = 1.0) -> Iterator[KopfRunner]:
    """The kiln operator in this process (kopf's test runner), watching one namespace."""
    env = {"KUBECONFIG": str(cluster.kubeconfig), "KILN_METRICS_PORT": "0",
           "KILN_RECONCILE_INTERVAL": str(interval)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        args = ["run", "--standalone", "--namespace", namespace, "-m", "kiln_operator.handlers",
                "-m", "kiln_operator.main"]
        with KopfRunner(args, timeout=60) as runner:
            yield runner
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def install_crd(cluster: Any) -> None:
    """Server-side apply of the chart's CRD, then wait until the API serves it."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    str(REPO / "charts" / "kiln" / "crds" / "trainingrun.yaml"))
    ext = client.ApiextensionsV1Api(cluster.api)

    def established() -> bool:
        crd = ext.read_custom_resource_definition("trainingruns.kiln.dev")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_for(established, 60, "TrainingRun CRD established")


@contextmanager
def run_namespace(cluster: Any, prefix: str) -> Iterator[str]:
    """A fresh namespace with the S3 Secret. On exit its TrainingRuns are deleted while an operator
    runs: the operator's delete handler puts a finalizer on them, so only a running operator lets them go."""
    from nodekit import namespace

    install_crd(cluster)
    with namespace(client.CoreV1Api(cluster.api), prefix) as ns:
        s3_secret(cluster, ns)
        try:
            yield ns
        finally:
            custom = client.CustomObjectsApi(cluster.api)
            if custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]:
                with operator(cluster, ns):
                    custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
                    wait_for(lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"],
                             120, f"TrainingRuns of {ns} deleted")


def s3_secret(cluster: Any, namespace: str, name: str = "kiln-s3") -> None:
    data = {"AWS_ACCESS_KEY_ID": cluster.s3["access_key"], "AWS_SECRET_ACCESS_KEY": cluster.s3["secret_key"]}
    client.CoreV1Api(cluster.api).create_namespaced_secret(namespace, {
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    })


def s3_endpoint_for_pods(cluster: Any) -> str:
    """The S3 Service by ClusterIP: moto's server reads a Host like `minio.kiln-system.svc` as a
    virtual-hosted bucket name ("minio"), so the DNS name only works once the cluster's moto is
    told it is an endpoint (MOTO_S3_CUSTOM_ENDPOINTS)."""
    svc = client.CoreV1Api(cluster.api).read_namespaced_service("minio", "kiln-system")
    return f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}"


def tiny_run(cluster: Any, bucket: str, name: str = "tiny", **training: Any) -> dict[str, Any]:
    """examples/tiny.yaml pointed at a test bucket, without serving (the run ends after export)."""
    doc = copy.deepcopy(yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text()))
    doc["metadata"] = {"name": name}
    doc["spec"]["storage"]["uri"] = f"s3://{bucket}/demo"
    doc["spec"]["storage"]["endpoint"] = s3_endpoint_for_pods(cluster)
    doc["spec"].pop("serving", None)
    doc["spec"]["training"].update(training)
    return doc  # type: ignore[no-any-return]


def create_run(cluster: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body)
    return out


def get_run(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name)
    return out


def phase(cluster: Any, namespace: str, name: str) -> str:
    return str(get_run(cluster, namespace, name).get("status", {}).get("phase") or "")


def condition(run: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in run.get("status", {}).get("conditions", []) if c["type"] == ctype), {})


def children(cluster: Any, namespace: str, run: str) -> dict[tuple[str, str], str]:
    """(kind, name) → uid of everything labelled with the run."""
    sel = f"kiln.dev/run={run}"
    core, batch, rbac = client.CoreV1Api(cluster.api), client.BatchV1Api(cluster.api), \
        client.RbacAuthorizationV1Api(cluster.api)
    out: dict[tuple[str, str], str] = {}
    for kind, items in (("Job", batch.list_namespaced_job(namespace, label_selector=sel).items),
                        ("ConfigMap", core.list_namespaced_config_map(namespace, label_selector=sel).items),
                        ("Service", core.list_namespaced_service(namespace, label_selector=sel).items),
                        ("ServiceAccount", core.list_namespaced_service_account(namespace, label_selector=sel).items),
                        ("Role", rbac.list_namespaced_role(namespace, label_selector=sel).items),
                        ("RoleBinding", rbac.list_namespaced_role_binding(namespace, label_selector=sel).items)):
        for obj in items:
            out[(kind, obj.metadata.name)] = obj.metadata.uid
    return out


def events(cluster: Any, namespace: str, name: str) -> list[str]:
    evs = client.CoreV1Api(cluster.api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=TrainingRun").items
    return [f"{e.reason}: {e.message}" for e in evs]
