"""Config generation of the real nodes (containerd, CNI, kubelet, kube-proxy, CoreDNS): no cluster."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest
from kiln_devcluster import coredns, nodeconfig
from kiln_devcluster.nodes import CLUSTER_DNS_IP, POD_NETWORK, NodeSpec, node_count, node_mode, node_specs
from kiln_devcluster.paths import StatePaths


@pytest.fixture
def nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[NodeSpec]:
    monkeypatch.setenv("KILN_CACHE", str(tmp_path / "cache"))
    return node_specs(StatePaths(tmp_path / "state"), 2)


def test_two_nodes_share_nothing_that_collides_on_one_machine(nodes: list[NodeSpec]) -> None:
    a, b = nodes
    for attr in ("name", "ip", "pod_subnet", "cgroup_parent", "containerd_socket", "containerd_state",
                 "kubelet_root", "cache", "ipam_dir", "pod_logs"):
        assert getattr(a, attr) != getattr(b, attr), attr
    subnets = [ipaddress.ip_network(n.pod_subnet) for n in nodes]
    assert not subnets[0].overlaps(subnets[1])
    assert all(s.subnet_of(ipaddress.ip_network(POD_NETWORK)) for s in subnets)
    # Node IPs are on the bridge but never handed to a pod.
    assert all(ipaddress.ip_address(n.ip) not in s for n in nodes for s in subnets)


def test_images_live_in_the_machine_cache_and_runtime_state_in_the_checkout(nodes: list[NodeSpec],
                                                                            tmp_path: Path) -> None:
    cfg = tomllib.loads(nodeconfig.containerd_toml(nodes[1]))
    assert Path(cfg["root"]).is_relative_to(tmp_path / "cache")
    assert Path(cfg["state"]).is_relative_to(tmp_path / "state")
    assert cfg["grpc"]["address"] == str(nodes[1].containerd_socket)


def test_containerd_cri_carries_the_facts_of_this_machine(nodes: list[NodeSpec]) -> None:
    cri = tomllib.loads(nodeconfig.containerd_toml(nodes[0]))["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == nodeconfig.PAUSE_IMAGE
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["cni"]["conf_dir"] == str(nodes[0].cni_conf_dir)


def test_cni_hands_out_only_the_nodes_own_slice(nodes: list[NodeSpec]) -> None:
    for node in nodes:
        bridge = nodeconfig.cni_conflist(node)["plugins"][0]
        assert bridge["type"] == "bridge" and bridge["bridge"] == "kiln0"
        (rng,) = bridge["ipam"]["ranges"][0]
        subnet = ipaddress.ip_network(node.pod_subnet)
        assert ipaddress.ip_address(rng["rangeStart"]) in subnet
        assert ipaddress.ip_address(rng["rangeEnd"]) in subnet
        assert bridge["ipam"]["dataDir"] == str(node.ipam_dir)
    assert [p["type"] for p in nodeconfig.cni_conflist(nodes[0])["plugins"]] == ["bridge", "portmap"]


def test_kubelet_config_binds_its_own_ip_and_cgroup_parent(nodes: list[NodeSpec], tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    cfg = nodeconfig.kubelet_config(nodes[1], ca)
    assert (cfg["address"], cfg["healthzBindAddress"]) == (nodes[1].ip, nodes[1].ip)
    assert cfg["cgroupRoot"] == "/kiln-node-1" and cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["failCgroupV1"] is False and cfg["failSwapOn"] is False
    assert cfg["clusterDNS"] == [CLUSTER_DNS_IP]
    assert cfg["containerRuntimeEndpoint"] == f"unix://{nodes[1].containerd_socket}"
    assert cfg["authentication"]["anonymous"]["enabled"] is False
    assert cfg["authentication"]["x509"]["clientCAFile"] == str(ca)
    argv = nodeconfig.kubelet_argv(nodes[1], Path("/b/kubelet"), tmp_path / "k.kubeconfig")
    assert "--hostname-override=kiln-node-1" in argv and f"--root-dir={nodes[1].kubelet_root}" in argv


def test_kube_proxy_uses_iptables_for_the_pod_network(tmp_path: Path) -> None:
    cfg = nodeconfig.kube_proxy_config(tmp_path / "kp.kubeconfig", "kiln-node-0")
    assert (cfg["mode"], cfg["clusterCIDR"], cfg["hostnameOverride"]) == ("iptables", POD_NETWORK, "kiln-node-0")


def test_coredns_service_sits_at_the_kubelets_cluster_dns_address() -> None:
    docs = {m["kind"]: m for m in coredns.manifests()}
    assert docs["Service"]["spec"]["clusterIP"] == CLUSTER_DNS_IP
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["imagePullPolicy"] == "Never"
    assert "kubernetes cluster.local" in docs["ConfigMap"]["data"]["Corefile"]


@pytest.mark.parametrize(("var", "value"), [("KILN_NODE", "docker"), ("KILN_NODE", "process"), ("KILN_NODES", "3"), ("KILN_NODES", "x")])
def test_bad_node_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=var):
        node_mode() if var == "KILN_NODE" else node_count()


def test_nodes_of_the_other_mode_or_beyond_the_count_are_stale() -> None:
    from kiln_devcluster.bootstrap import stale_nodes

    def node(name: str, runtime: str) -> dict[str, object]:
        return {"metadata": {"name": name}, "status": {"nodeInfo": {"containerRuntimeVersion": runtime}}}

    nodes = [node("kiln-node-0", "containerd://1.6.20"), node("kiln-node-1", "containerd://1.6.20")]
    assert stale_nodes(nodes, {"kiln-node-0", "kiln-node-1"}, real=True) == []
    assert stale_nodes(nodes, {"kiln-node-0"}, real=True) == ["kiln-node-1"]
    assert stale_nodes(nodes, {"kiln-node-0"}, real=False) == ["kiln-node-0", "kiln-node-1"]
    assert stale_nodes([node("kiln-node-0", "kiln-process://0.1")], {"kiln-node-0"}, real=True) == ["kiln-node-0"]
