"""Pod phase, back-off, probes counters, image map, launch script, log tail, IP allocation."""

from pathlib import Path

import pytest
from kiln_devcluster.node.backoff import Backoff
from kiln_devcluster.node.config import NodeConfig
from kiln_devcluster.node.envresolve import ConfigError
from kiln_devcluster.node.images import DEFAULT_IMAGES_FILE, ImageMap, UnknownImage, build_argv, normalize
from kiln_devcluster.node.kubeletapi import tail
from kiln_devcluster.node.launch import missing_root, plan_mounts, remove_created, render_script
from kiln_devcluster.node.netns import AddressPoolExhausted, IPAllocator, veth_name
from kiln_devcluster.node.podstatus import ContainerRecord, compute_phase, condition_values
from kiln_devcluster.node.probes import ProbeCounter


def rec(state, code=None, last=None):
    r = ContainerRecord("c", "img", state=state, exit_code=code)
    r.last_terminated = last
    return r


@pytest.mark.parametrize(
    ("policy", "init", "main", "want"),
    [
        ("Always", [], [rec("waiting")], "Pending"),
        ("Always", [rec("running")], [rec("waiting")], "Pending"),
        ("Never", [rec("terminated", 1)], [rec("waiting")], "Failed"),
        ("OnFailure", [rec("terminated", 1)], [rec("waiting")], "Pending"),
        ("Always", [rec("terminated", 0)], [rec("running")], "Running"),
        ("Never", [], [rec("terminated", 0), rec("terminated", 0)], "Succeeded"),
        ("Never", [], [rec("terminated", 0), rec("terminated", 2)], "Failed"),
        ("Never", [], [rec("terminated", 2), rec("running")], "Running"),
        ("OnFailure", [], [rec("terminated", 0)], "Succeeded"),
        ("OnFailure", [], [rec("waiting", last={"exitCode": 1})], "Running"),
        ("Always", [], [rec("terminated", 0)], "Running"),
        ("Always", [], [rec("waiting", last={"exitCode": 137})], "Running"),
        ("Always", [], [rec("running"), rec("waiting")], "Pending"),
    ],
)
def test_phase(policy, init, main, want):
    assert compute_phase(policy, init, main) == want


def test_phase_rejects_bad_policy():
    with pytest.raises(ValueError, match="spec.restartPolicy"):
        compute_phase("Sometimes", [], [])


def test_conditions_ready_only_when_all_ready():
    a, b = rec("running"), rec("running")
    a.ready = True
    vals = condition_values("Running", True, [], [a, b])
    assert vals["Ready"][0] is False and vals["ContainersReady"][1] == "ContainersNotReady"
    b.ready = True
    assert condition_values("Running", True, [], [a, b])["Ready"][0] is True
    assert condition_values("Succeeded", True, [], [rec("terminated", 0)])["Ready"] == (False, "PodCompleted")


def test_container_status_shapes():
    r = rec("waiting")
    r.reason, r.message = "CreateContainerConfigError", "no key"
    st = r.to_status()
    assert st["state"] == {"waiting": {"reason": "CreateContainerConfigError", "message": "no key"}}
    assert st["ready"] is False and st["restartCount"] == 0
    r = rec("terminated", 0)
    r.reason = "Completed"
    assert r.to_status()["state"]["terminated"]["exitCode"] == 0


def test_backoff_doubles_caps_and_resets():
    b = Backoff(initial=10, maximum=40, reset_after=600)
    assert [b.next_delay(1) for _ in range(4)] == [10, 20, 40, 40]
    assert b.next_delay(601) == 10


def test_backoff_validates():
    with pytest.raises(ValueError, match="backoff.maximum"):
        Backoff(initial=10, maximum=5)


def test_probe_counter_thresholds():
    c = ProbeCounter(success_threshold=2, failure_threshold=3)
    assert c.record(True) is None
    assert c.record(True) is True
    assert c.record(False) is True and c.record(False) is True
    assert c.record(False) is False
    assert c.record(True) is False and c.record(True) is True


def test_image_map_rules():
    m = ImageMap.load(DEFAULT_IMAGES_FILE)
    assert m.resolve("ghcr.io/acme/kiln-trainer:0.1").runtime == "venv"
    assert m.resolve("ghcr.io/acme/kiln-trainer:0.1").entrypoint == ("kiln-trainer",)
    assert m.resolve("nvcr.io/nvidia/tritonserver:24.08-py3").runtime == "triton"
    assert m.resolve("python:3.11-slim").runtime == "venv"
    assert m.resolve("docker.io/library/busybox:1.36").runtime == "host"
    assert m.resolve("alpine:3.10").runtime == "host"
    with pytest.raises(UnknownImage, match="nginx:1.27"):
        m.resolve("nginx:1.27")
    assert normalize("index.docker.io/library/alpine") == "alpine"


def test_image_map_rejects_bad_runtime(tmp_path):
    f = tmp_path / "images.yaml"
    f.write_text("rules:\n  - match: ['x*']\n    runtime: docker\n")
    with pytest.raises(ValueError, match="runtime 'docker'"):
        ImageMap.load(f)


def test_argv_command_replaces_entrypoint(tmp_path):
    rule = ImageMap.load(DEFAULT_IMAGES_FILE).resolve("kiln/trainer:dev")
    assert build_argv(rule, [], ["train", "--x"], tmp_path) == ("kiln-trainer", "train", "--x")
    assert build_argv(rule, ["python3", "-c"], ["print(1)"], tmp_path) == ("python3", "-c", "print(1)")
    py = ImageMap.load(DEFAULT_IMAGES_FILE).resolve("python:3.11")
    assert build_argv(py, [], [], tmp_path) == ("python3",)  # CMD
    assert build_argv(py, [], ["python", "-V"], tmp_path) == ("python", "-V")  # args replace CMD


def test_triton_command_rewritten(tmp_path):
    rule = ImageMap.load(DEFAULT_IMAGES_FILE).resolve("nvcr.io/nvidia/tritonserver:24.08-py3")
    argv = build_argv(rule, ["tritonserver"], ["--model-repository=s3://x"], tmp_path)
    assert argv[0].endswith("pytriton/tritonserver/bin/tritonserver")
    backend = Path(argv[-1].split("=", 1)[1])
    assert (backend / "python" / "triton_python_backend_stub").exists()
    assert (backend / "python" / "libtriton_python.so").exists()


def test_mounts_and_script(tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "file.txt").write_text("x")
    hosts = tmp_path / "etc-hosts"
    hosts.write_text("")
    container = {"volumeMounts": [
        {"name": "v", "mountPath": "/data/inner", "readOnly": True},
        {"name": "v", "mountPath": "/data"},
        {"name": "v", "mountPath": "/cfg/file.txt", "subPath": "file.txt"},
    ]}
    mounts = plan_mounts(container, {"v": vol}, hosts)
    targets = [m.target for m in mounts]
    assert targets.index("/data") < targets.index("/data/inner")
    assert targets[-1] == "/etc/hosts"
    script = render_script(mounts, "pod-a", "/work dir")
    assert "mount -o remount,bind,ro /data/inner" in script
    assert "/usr/bin/touch /cfg/file.txt" in script
    assert "cd '/work dir'" in script and script.rstrip().endswith('exec "$@"')
    with pytest.raises(ConfigError, match='no volume named "w"'):
        plan_mounts({"volumeMounts": [{"name": "w", "mountPath": "/x"}]}, {"v": vol}, hosts)


def test_tail_lines():
    data = b"a\nb\nc\n"
    assert tail(data, 2) == b"b\nc\n"
    assert tail(data, None) == data
    assert tail(b"a\nb", 1) == b"b"
    assert tail(data, 0) == b""


def test_ip_allocator_skips_gateway_and_round_robins():
    ipam = IPAllocator("10.88.0.0/29", "10.88.0.1")
    got = [ipam.allocate() for _ in range(5)]
    assert got == ["10.88.0.2", "10.88.0.3", "10.88.0.4", "10.88.0.5", "10.88.0.6"]
    with pytest.raises(AddressPoolExhausted):
        ipam.allocate()
    ipam.release("10.88.0.3")
    assert ipam.allocate() == "10.88.0.3"
    assert len(veth_name("0f4e3c9a-1111-2222-3333-444455556666")) <= 15


def test_node_config_validates():
    with pytest.raises(ValueError, match="node_ip"):
        NodeConfig(node_ip="192.168.0.1")
    with pytest.raises(ValueError, match="gpus"):
        NodeConfig(gpus=-1)


def test_created_mount_points_are_removed_when_empty(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    root = missing_root(str(target))
    assert root == tmp_path / "a"
    target.mkdir(parents=True)
    (tmp_path / "a" / "keep").mkdir()
    remove_created(str(target), root)
    assert not (tmp_path / "a" / "b").exists() and (tmp_path / "a" / "keep").exists()
    assert missing_root(str(tmp_path)) is None


def test_probe_checks_against_local_servers():
    import http.server
    import socket
    import threading

    from kiln_devcluster.node.probes import check

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        def no_exec(argv, timeout):
            return 0, ""
        ports = {"http": port}
        assert check({"httpGet": {"path": "/ok", "port": "http"}}, "127.0.0.1", ports, 2, no_exec)[0] is True
        ok, msg = check({"httpGet": {"path": "/bad", "port": port}}, "127.0.0.1", ports, 2, no_exec)
        assert ok is False and "503" in msg
        assert check({"tcpSocket": {"port": port}}, "127.0.0.1", ports, 2, no_exec)[0] is True
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        assert check({"tcpSocket": {"port": closed}}, "127.0.0.1", ports, 2, no_exec)[0] is False
        assert check({"exec": {"command": ["x"]}}, "127.0.0.1", ports, 2, lambda a, t: (1, "no"))[0] is False
        ok, msg = check({"httpGet": {"port": "nope"}}, "127.0.0.1", ports, 2, no_exec)
        assert ok is False and "nope" in msg
    finally:
        server.shutdown()


def test_a_mount_over_the_state_folder_comes_after_the_mounts_it_would_hide(tmp_path):
    from kiln_devcluster.node.launch import Mount, order_mounts

    state = "/tmp/ci/.kiln/node/pods/u1"
    mounts = [
        Mount(Path(f"{state}/volumes/scratch"), "/tmp"),
        Mount(Path(f"{state}/volumes/config"), "/etc/kiln", True),
        Mount(Path(f"{state}/volumes/cache"), "/tmp/cache"),
        Mount(Path(f"{state}/etc-hosts"), "/etc/hosts"),
    ]
    got = [m.target for m in order_mounts(mounts)]
    assert got.index("/etc/kiln") < got.index("/tmp") and got.index("/etc/hosts") < got.index("/tmp")
    assert got.index("/tmp") < got.index("/tmp/cache"), "a parent mount still comes before its children"
    plain = [Mount(Path("/work/s/a"), "/a/b"), Mount(Path("/work/s/b"), "/a")]
    assert [m.target for m in order_mounts(plain)] == ["/a", "/a/b"]


def test_a_mount_over_the_nodes_runtime_is_not_made():
    from kiln_devcluster.node.launch import Mount, split_shadowing

    mounts = [Mount(Path("/tmp/ci/.kiln/pods/u/volumes/tmp"), "/tmp"), Mount(Path("/tmp/ci/.kiln/v/c"), "/etc/kiln")]
    kept, dropped = split_shadowing(mounts, [Path("/tmp/ci"), Path("/tmp/ci/.venv")])
    assert [m.target for m in kept] == ["/etc/kiln"] and [m.target for m in dropped] == ["/tmp"]
    kept, dropped = split_shadowing(mounts, [Path("/work/main")])
    assert len(kept) == 2 and dropped == []
