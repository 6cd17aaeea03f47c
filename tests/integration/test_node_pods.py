"""The real nodes (kubelet + containerd) run pods from the real API server (needs the embedded cluster)."""

from __future__ import annotations

import pytest
from clusterlib import state_dir as cluster_state_dir
from kubernetes import client
from nodekit import (
    SH_IMAGE,
    container_runs,
    event_reasons,
    exit_code,
    namespace,
    pod,
    pod_log,
    read_pod,
    wait_phase,
    wait_waiting_reason,
)
from waiting import wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def core(cluster):
    return client.CoreV1Api(cluster.api)


@pytest.fixture
def ns(core):
    with namespace(core, "node") as name:
        yield name


def test_pod_succeeds_and_logs_come_back_through_the_api(core, ns):
    script = "import os, socket; print('hello from', os.environ['POD_NAME'], socket.gethostname()); print('line2')"
    manifest = pod("hello", ["python", "-c", script],
                   env=[{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    core.create_namespaced_pod(ns, manifest)
    p = wait_phase(core, ns, "hello", ("Succeeded", "Failed"), 120)
    assert p["status"]["phase"] == "Succeeded", p["status"]
    assert exit_code(p) == 0
    assert p["status"]["podIP"].startswith("10.88.") and p["status"]["hostIP"].startswith("10.88.0.")
    logs = pod_log(core, ns, "hello", container="main")
    assert logs == "hello from hello hello\nline2\n"
    assert pod_log(core, ns, "hello", container="main", tail_lines=1) == "line2\n"


def test_follow_streams_logs_until_the_container_exits(core, ns):
    script = "import time\nfor i in range(6):\n    print('tick', i, flush=True); time.sleep(0.5)\n"
    core.create_namespaced_pod(ns, pod("ticker", ["python", "-c", script]))
    wait_phase(core, ns, "ticker", ("Running", "Succeeded"), 60)
    resp = core.read_namespaced_pod_log("ticker", ns, follow=True, _preload_content=False, _request_timeout=30)
    # The stream ends by itself when the process exits (else the 30 s read timeout fails the test).
    text = b"".join(resp.stream(1024)).decode()
    assert text == "".join(f"tick {i}\n" for i in range(6))


def test_failing_command_gives_failed_phase_and_exit_code(core, ns):
    core.create_namespaced_pod(ns, pod("fails", ["sh", "-c", "echo bye; exit 3"], image=SH_IMAGE))
    p = wait_phase(core, ns, "fails", ("Succeeded", "Failed"), 120)
    assert p["status"]["phase"] == "Failed"
    assert exit_code(p) == 3
    assert p["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Error"


def test_volumes_env_and_in_cluster_api_access(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"greeting.txt": "hi there"}})
    core.create_namespaced_secret(ns, {"metadata": {"name": "sec"}, "stringData": {"token": "t0p"}})
    # Only the standard library: the in-cluster API through the Service host, the SA token and CA.
    script = (
        "import json, os, pathlib, ssl, urllib.request\n"
        "sa = pathlib.Path('/var/run/secrets/kubernetes.io/serviceaccount')\n"
        "url = f\"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}\"\n"
        "req = urllib.request.Request(f\"{url}/api/v1/namespaces/{os.environ['NS']}/pods/{os.environ['ME']}\",\n"
        "                             headers={'Authorization': 'Bearer ' + (sa / 'token').read_text()})\n"
        "ctx = ssl.create_default_context(cafile=str(sa / 'ca.crt'))\n"
        "me = json.load(urllib.request.urlopen(req, context=ctx))\n"
        "print('api-sees', me['metadata']['name'], me['status']['podIP'] == os.environ['IP'])\n"
        "print('cfg', pathlib.Path('/cfg/greeting.txt').read_text())\n"
        "print('sec', os.environ['TOKEN'], pathlib.Path('/sec/token').read_text())\n"
        "pathlib.Path('/scratch/x').write_text('w'); print('scratch', pathlib.Path('/scratch/x').read_text())\n"
        "print('cwd', os.getcwd())\n"
    )
    manifest = pod(
        "vols", ["python", "-c", script], workingDir="/scratch",
        env=[{"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
             {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
             {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
             {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}}],
        volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}, {"name": "sec", "mountPath": "/sec"},
                      {"name": "scratch", "mountPath": "/scratch"}],
    )
    manifest["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "cfg"}},
                                   {"name": "sec", "secret": {"secretName": "sec"}},
                                   {"name": "scratch", "emptyDir": {}}]
    # Reading its own pod needs RBAC: grant the namespace's default SA the view role.
    client.RbacAuthorizationV1Api(core.api_client).create_namespaced_role_binding(ns, {
        "metadata": {"name": "view"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                  "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]})
    core.create_namespaced_pod(ns, manifest)
    p = wait_phase(core, ns, "vols", ("Succeeded", "Failed"), 120)
    logs = pod_log(core, ns, "vols")
    assert p["status"]["phase"] == "Succeeded", logs
    assert "api-sees vols True" in logs
    assert "cfg hi there" in logs and "sec t0p t0p" in logs and "scratch w" in logs and "cwd /scratch" in logs


def test_configmap_volume_follows_updates(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "live"}, "data": {"version": "1"}})
    script = "import time\nwhile True:\n    print(open('/live/version').read(), flush=True); time.sleep(0.5)\n"
    manifest = pod("reader", ["python", "-c", script], restart="Always",
                   volumeMounts=[{"name": "live", "mountPath": "/live", "readOnly": True}])
    manifest["spec"]["volumes"] = [{"name": "live", "configMap": {"name": "live"}}]
    core.create_namespaced_pod(ns, manifest)
    wait_for(lambda: "1" in pod_log(core, ns, "reader"), 60, "the first version read")
    core.patch_namespaced_config_map("live", ns, {"data": {"version": "2"}})
    # A real kubelet rewrites a ConfigMap volume on the pod's next sync (syncFrequency 1 min, plus
    # jitter), not at once: the deadline allows two syncs.
    wait_for(lambda: pod_log(core, ns, "reader", tail_lines=1) == "2\n", 150, "the update seen in the running pod")


def test_missing_secret_key_gives_create_container_config_error(core, ns):
    core.create_namespaced_secret(ns, {"metadata": {"name": "creds"}, "stringData": {"user": "u"}})
    manifest = pod("nokey", ["python", "-c", "print(1)"],
                   env=[{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}])
    core.create_namespaced_pod(ns, manifest)
    p = wait_waiting_reason(core, ns, "nokey", ("CreateContainerConfigError",), 60)
    status = p["status"]["containerStatuses"][0]["state"]["waiting"]
    assert "password" in status["message"]
    assert p["status"]["phase"] == "Pending"
    wait_for(lambda: any("password" in m for r, m in event_reasons(core, ns, "nokey") if r == "Failed"),
             30, "a Failed event naming the key")


def test_unknown_image_gives_image_pull_error(core, ns):
    core.create_namespaced_pod(ns, pod("noimg", ["x"], image="registry.example/nothing:1"))
    wait_waiting_reason(core, ns, "noimg", ("ErrImagePull", "ImagePullBackOff"), 60)
    wait_waiting_reason(core, ns, "noimg", ("ImagePullBackOff",), 60)
    wait_for(lambda: any("registry.example/nothing:1" in m for _, m in event_reasons(core, ns, "noimg")),
             30, "an event naming the image")


def test_two_pods_listen_on_the_same_port(core, ns):
    server = ("import http.server, os\n"
              "class H(http.server.BaseHTTPRequestHandler):\n"
              "    def do_GET(self):\n"
              "        self.send_response(200); self.end_headers(); self.wfile.write(os.environ['WHO'].encode())\n"
              "http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()\n")
    probe = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
    for who in ("a", "b"):
        core.create_namespaced_pod(ns, pod(f"srv-{who}", ["python", "-c", server], restart="Always",
                                           env=[{"name": "WHO", "value": who}], readinessProbe=probe))

    def ready_ips():
        pods = [read_pod(core, ns, f"srv-{w}") for w in ("a", "b")]
        ok = all(any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
                 for p in pods)
        return [p["status"]["podIP"] for p in pods] if ok else None

    ips = wait_for(ready_ips, 90, "both servers Ready")
    import urllib.request

    answers = [urllib.request.urlopen(f"http://{ip}:8080/", timeout=5).read().decode() for ip in ips]
    assert answers == ["a", "b"]


def test_crash_loop_back_off_and_restart_count(core, ns):
    core.create_namespaced_pod(ns, pod("crash", ["sh", "-c", "echo run; exit 1"], image=SH_IMAGE, restart="Always"))

    def looping():
        p = read_pod(core, ns, "crash")
        st = (p["status"].get("containerStatuses") or [{}])[0]
        return st if st.get("restartCount", 0) >= 1 and (st.get("lastState") or {}).get("terminated") else None

    st = wait_for(looping, 60, "a restart with lastState.terminated")
    assert st["lastState"]["terminated"]["exitCode"] == 1
    wait_waiting_reason(core, ns, "crash", ("CrashLoopBackOff",), 60)
    assert read_pod(core, ns, "crash")["status"]["phase"] == "Running"
    assert "run" in pod_log(core, ns, "crash", previous=True)


def test_liveness_failure_restarts_the_container(core, ns):
    # Alive for the first ~3 probes, then /tmp/alive vanishes and the exec probe fails.
    cmd = ["sh", "-c", "touch /tmp/alive-$HOSTNAME; sleep 4; rm -f /tmp/alive-$HOSTNAME; sleep 300"]
    live = {"exec": {"command": ["sh", "-c", "test -e /tmp/alive-$HOSTNAME"]}, "periodSeconds": 1,
            "failureThreshold": 2}
    core.create_namespaced_pod(ns, pod("live", cmd, image=SH_IMAGE, restart="Always", livenessProbe=live))
    wait_for(lambda: read_pod(core, ns, "live")["status"]["containerStatuses"][0]["restartCount"] >= 1,
             60, "a liveness restart")
    assert any(r == "Unhealthy" for r, _ in event_reasons(core, ns, "live"))


def test_deletion_sends_sigterm_then_removes_the_pod(core, ns):
    script = ("import signal, sys, time\n"
              "def bye(*_):\n"
              "    print('got SIGTERM', flush=True); sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, bye)\n"
              "print('up', flush=True)\n"
              "time.sleep(600)\n")
    core.create_namespaced_pod(ns, pod("term", ["python", "-c", script], restart="Always"))
    p = wait_phase(core, ns, "term", ("Running",), 60)
    still_running = container_runs(p, cluster_state_dir())
    assert still_running(), "the container's process is not found while it runs"
    wait_for(lambda: "up" in pod_log(core, ns, "term"), 30, "the process printing up")
    core.delete_namespaced_pod("term", ns, grace_period_seconds=20)

    def gone():
        try:
            core.read_namespaced_pod("term", ns)
            return False
        except client.ApiException as exc:
            return exc.status == 404

    # It exits on SIGTERM, so it is gone well before the 20 s grace period.
    wait_for(gone, 15, "the pod object deleted after SIGTERM")
    assert not still_running(), "the container process still runs"
