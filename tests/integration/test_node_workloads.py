"""Deployments through the real scheduler and controller-manager, and ClusterIP Services, on the process node."""

from __future__ import annotations

import urllib.request

import pytest
from kubernetes import client
from nodekit import PY_IMAGE, namespace, pod, pod_log, wait_phase
from waiting import wait_for

pytestmark = pytest.mark.timeout(300)

SERVER = ("import http.server, os\n"
          "class H(http.server.BaseHTTPRequestHandler):\n"
          "    def do_GET(self):\n"
          "        body = (os.environ.get('VERSION', '?') + ' ' + os.environ['POD']).encode()\n"
          "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
          "        self.wfile.write(body)\n"
          "    def log_message(self, *a): pass\n"
          "http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()\n")


@pytest.fixture(scope="module")
def apis(cluster):
    c = cluster.api
    return client.CoreV1Api(c), client.AppsV1Api(c)


@pytest.fixture
def ns(apis):
    with namespace(apis[0], "work") as name:
        yield name


def deployment(version: str, replicas: int = 2) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                    "name": "web", "image": PY_IMAGE, "command": ["python", "-c", SERVER],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "env": [{"name": "VERSION", "value": version},
                            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                }]},
            },
        },
    }


def rolled_out(apps: client.AppsV1Api, ns: str, replicas: int):
    d = apps.read_namespaced_deployment("web", ns)
    s = d.status
    done = (s.observed_generation == d.metadata.generation and (s.updated_replicas or 0) == replicas
            and (s.ready_replicas or 0) == replicas and (s.replicas or 0) == replicas)
    return d if done else None


def web_pods(core: client.CoreV1Api, ns: str) -> list:
    return [p for p in core.list_namespaced_pod(ns, label_selector="app=web").items
            if p.metadata.deletion_timestamp is None]


def test_deployment_rollout_update_and_garbage_collection(apis, ns):
    core, apps = apis
    apps.create_namespaced_deployment(ns, deployment("v1"))
    wait_for(lambda: rolled_out(apps, ns, 2), 120, "deployment web v1 rolled out")
    first = {p.metadata.name for p in web_pods(core, ns)}
    assert len(first) == 2
    assert all(p.spec.node_name.startswith("kiln-node-") for p in web_pods(core, ns))

    apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "env": [{"name": "VERSION", "value": "v2"},
                                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}}})
    wait_for(lambda: rolled_out(apps, ns, 2), 180, "deployment web v2 rolled out")

    def replaced():
        pods = web_pods(core, ns)
        names = {p.metadata.name for p in pods}
        return len(pods) == 2 and not names & first
    wait_for(replaced, 60, "both v1 pods replaced")
    for p in web_pods(core, ns):
        body = urllib.request.urlopen(f"http://{p.status.pod_ip}:8080/", timeout=5).read().decode()
        assert body == f"v2 {p.metadata.name}"

    rs_names = [rs.metadata.name for rs in apps.list_namespaced_replica_set(ns).items]
    assert len(rs_names) == 2
    apps.delete_namespaced_deployment("web", ns, propagation_policy="Background")
    wait_for(lambda: not apps.list_namespaced_replica_set(ns).items, 60, "ReplicaSets garbage-collected")
    wait_for(lambda: not core.list_namespaced_pod(ns, label_selector="app=web").items, 60, "pods garbage-collected")


def test_cluster_ip_service_from_host_and_from_pod(apis, ns):
    core, apps = apis
    apps.create_namespaced_deployment(ns, deployment("v1"))
    core.create_namespaced_service(ns, {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    wait_for(lambda: rolled_out(apps, ns, 2), 120, "deployment rolled out")
    ip = core.read_namespaced_service("web", ns).spec.cluster_ip
    assert ip.startswith("10.96.")

    def answers_from_host():
        return {urllib.request.urlopen(f"http://{ip}/", timeout=3).read().decode().split()[1] for _ in range(6)}
    seen = wait_for(lambda: len(answers_from_host()) == 2 and answers_from_host(), 60,
                    "ClusterIP answering from both pods (round robin)")
    assert seen == {p.metadata.name for p in web_pods(core, ns)}

    # From another pod, by every DNS-style name the hosts file provides.
    script = ("import urllib.request, sys\n"
              "for host in sys.argv[1:]:\n"
              "    print(host, urllib.request.urlopen(f'http://{host}/', timeout=5).read().decode())\n")
    names = ["web", f"web.{ns}", f"web.{ns}.svc", f"web.{ns}.svc.cluster.local"]
    core.create_namespaced_pod(ns, pod("client", ["python", "-c", script, *names]))
    p = wait_phase(core, ns, "client", ("Succeeded", "Failed"), 90)
    logs = pod_log(core, ns, "client")
    assert p["status"]["phase"] == "Succeeded", logs
    for name in names:
        assert f"{name} v1 web-" in logs
