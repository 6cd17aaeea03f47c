"""Cluster networking on the real nodes: CoreDNS names, kube-proxy ClusterIPs, the S3
Service, and a 2-pod Job spread over both nodes. Skipped on the process node."""

from __future__ import annotations

import re
import uuid

import pytest
from kubernetes import client
from nodekit import (
    BUSYBOX,
    busybox_pod,
    namespace,
    page_server,
    pod_log,
    real_node_names,
    service,
    wait_phase,
)
from waiting import wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def core(cluster):
    real_node_names(cluster)
    return client.CoreV1Api(cluster.api)


@pytest.fixture
def ns(core):
    with namespace(core, "realnet") as name:
        yield name


def _run(core: client.CoreV1Api, ns: str, name: str, script: str) -> tuple[str, str]:
    """Run ``script`` in a busybox pod; (phase, log)."""
    core.create_namespaced_pod(ns, busybox_pod(name, script))
    p = wait_phase(core, ns, name, ("Succeeded", "Failed"), 120)
    return p["status"]["phase"], pod_log(core, ns, name)


def _serving(core: client.CoreV1Api, ns: str, text: str) -> str:
    """A page server behind Service ``web``; returns the Service's ClusterIP once it has an endpoint."""
    core.create_namespaced_pod(ns, page_server("web", text))
    svc = core.create_namespaced_service(ns, service("web", {"test": "web"}))
    discovery = client.DiscoveryV1Api(core.api_client)

    def endpoint_ready() -> bool:
        slices = discovery.list_namespaced_endpoint_slice(ns, label_selector="kubernetes.io/service-name=web").items
        return any(ep.conditions.ready for s in slices for ep in (s.endpoints or []))

    wait_for(endpoint_ready, 120, "an endpoint of Service web ready")
    return str(svc.spec.cluster_ip)


def test_service_name_resolves_to_its_cluster_ip(core, ns):
    ip = _serving(core, ns, "dns")
    phase, log = _run(core, ns, "lookup", f"nslookup web.{ns}.svc.cluster.local")
    assert phase == "Succeeded", log
    assert ip in log, log
    # (busybox's nslookup ignores the search path; the short form web.<ns>.svc is fetched through
    # the resolver's search path in the ClusterIP test below.)


def test_cluster_ip_reaches_the_pod_through_kube_proxy(core, ns):
    text = f"via-proxy-{uuid.uuid4().hex[:6]}"
    ip = _serving(core, ns, text)
    phase, log = _run(core, ns, "fetch", f"wget -qO- http://{ip}/ && wget -qO- http://web.{ns}.svc/")
    assert phase == "Succeeded", log
    assert log.split() == [text, text]


def test_pods_reach_the_s3_service(core, ns):
    # versitygw refuses an anonymous GET / (403, it checks every request's signature); any HTTP status
    # line proves DNS, the Service and the route to the host's S3 port work (wget -S prints it).
    phase, log = _run(core, ns, "s3", "wget -S -O- http://minio.kiln-system.svc:9000/ 2>&1 || true")
    assert re.search(r"HTTP/1\.[01] [1-5]\d\d", log), log


def test_two_pod_job_spreads_over_both_nodes(cluster, core, ns):
    nodes = real_node_names(cluster)
    if len(nodes) < 2:
        pytest.skip(f"one real node only ({nodes}); KILN_NODES=2 runs two")
    labels = {"test": "spread"}
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "spread"},
        "spec": {
            "completions": 2, "parallelism": 2, "completionMode": "Indexed", "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    # Both pods must be running at once on different nodes to finish.
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": labels}, "topologyKey": "kubernetes.io/hostname"}]}},
                    "containers": [{
                        "name": "main", "image": BUSYBOX, "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "echo rank $JOB_COMPLETION_INDEX on $NODE"],
                        "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                    }],
                },
            },
        },
    }
    client.BatchV1Api(cluster.api).create_namespaced_job(ns, job)

    def done() -> bool:
        st = client.BatchV1Api(cluster.api).read_namespaced_job_status("spread", ns).status
        return (st.succeeded or 0) == 2 or (st.failed or 0) > 0

    wait_for(done, 180, "job spread finished")
    pods = core.list_namespaced_pod(ns, label_selector="test=spread").items
    assert sorted(p.status.phase for p in pods) == ["Succeeded", "Succeeded"]
    assert len({p.spec.node_name for p in pods}) == 2, [p.spec.node_name for p in pods]
