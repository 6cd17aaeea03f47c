"""The real nodes as components of `up`/`down`: per node a containerd and a kubelet,
then one kube-proxy for the machine and CoreDNS in the cluster.

Order (each waited for): containerd (config, cgroup parent, node images imported)
→ kubelet (Node Ready) → … next node … → kube-proxy (Services routed) → CoreDNS
(Deployment available). `down` removes the containers while containerd still runs;
nodecleanup.py removes whatever is left once everything has stopped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from functools import partial

import yaml

from kiln_devcluster import bootstrap, coredns, nodecleanup, nodeconfig
from kiln_devcluster.apiclient import get_json
from kiln_devcluster.components import Component, Ctx, _get_ok
from kiln_devcluster.nodeimages import node_images
from kiln_devcluster.nodes import KUBELET_HEALTHZ_PORT, NodeSpec, node_specs
from kiln_devcluster.ociimage import ensure_imported

CONTAINERD = "containerd"


def say(msg: str) -> None:
    print(f"[kiln-dev] {msg}", flush=True)


def _containerd_ready(node: NodeSpec) -> bool:
    if not node.containerd_socket.exists():
        return False
    out = subprocess.run(["ctr", f"--address={node.containerd_socket}", "version"], capture_output=True, timeout=10)
    return out.returncode == 0


def _prepare_containerd(node: NodeSpec, ctx: Ctx) -> None:
    if shutil.which(CONTAINERD) is None:
        raise FileNotFoundError("containerd is not installed: run devcluster/host-deps.sh (make cluster-up does)")
    node.ensure()
    node.containerd_config.write_text(nodeconfig.containerd_toml(node))
    (node.cni_conf_dir / "10-kiln.conflist").write_text(json.dumps(nodeconfig.cni_conflist(node), indent=2))


def _import_images(node: NodeSpec, ctx: Ctx) -> None:
    start = time.monotonic()
    imported = [img.ref for img in node_images(ctx.bin) if ensure_imported(node.containerd_socket, img)]
    if imported:
        say(f"{node.name}: imported {', '.join(imported)} ({time.monotonic() - start:.1f}s)")


def _prepare_kubelet(node: NodeSpec, ctx: Ctx) -> None:
    nodecleanup.ensure_cgroups(node)
    node.kubelet_config.write_text(yaml.safe_dump(nodeconfig.kubelet_config(node, ctx.pki.ca_crt), sort_keys=False))


def _kubelet_argv(node: NodeSpec, ctx: Ctx) -> list[str]:
    return nodeconfig.kubelet_argv(node, ctx.bin / "kubelet", ctx.pki.kubeconfig(f"kubelet-{node.name}"))


def _wait(what: str, check: partial[bool], timeout_s: float) -> None:
    start = time.monotonic()
    while time.monotonic() < start + timeout_s:
        if check():
            say(f"{what} ({time.monotonic() - start:.1f}s)")
            return
        time.sleep(0.25)
    raise TimeoutError(f"{what} not reached after {timeout_s:.0f}s")


def _wait_node_ready(node: NodeSpec, ctx: Ctx) -> None:
    _wait(f"Node {node.name} Ready", partial(bootstrap.node_ready, ctx, node.name), 120)


def _kube_proxy_argv(ctx: Ctx) -> list[str]:
    return [str(ctx.bin / "kube-proxy"), f"--config={ctx.paths.root / 'nodes' / 'kube-proxy.yaml'}", "--v=1"]


def _prepare_kube_proxy(ctx: Ctx) -> None:
    cfg = nodeconfig.kube_proxy_config(ctx.pki.kubeconfig("kube-proxy"), node_specs(ctx.paths, 1)[0].name)
    (ctx.paths.root / "nodes" / "kube-proxy.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def _coredns_available(ctx: Ctx) -> bool:
    dep = get_json(ctx, f"/apis/apps/v1/namespaces/{coredns.NAMESPACE}/deployments/{coredns.NAME}") or {}
    return int(dep.get("status", {}).get("availableReplicas") or 0) >= 1


def _deploy_coredns(ctx: Ctx) -> None:
    docs = "\n---\n".join(json.dumps(m) for m in coredns.manifests())
    bootstrap.kubectl(ctx, "apply", "--server-side", "--force-conflicts", "--field-manager=kiln-devcluster", "-f", "-", stdin=docs)
    _wait("CoreDNS Deployment available", partial(_coredns_available, ctx), 120)


def _remove_containers(node: NodeSpec, ctx: Ctx) -> None:
    if count := nodecleanup.remove_containers(node):
        say(f"{node.name}: removed {count} containers")


def real_node_components(nodes: list[NodeSpec]) -> tuple[Component, ...]:
    """containerd + kubelet per node, then kube-proxy (which also deploys CoreDNS once healthy)."""
    comps: list[Component] = []
    for node in nodes:
        comps.append(Component(
            f"containerd-{node.name}", lambda c, n=node: [CONTAINERD, f"--config={n.containerd_config}"],
            lambda c, n=node: _containerd_ready(n), 30,
            prepare=partial(_prepare_containerd, node), after_healthy=partial(_import_images, node),
            before_stop=partial(_remove_containers, node),
        ))
        comps.append(Component(
            f"kubelet-{node.name}", partial(_kubelet_argv, node),
            lambda c, n=node: _get_ok(f"http://{n.ip}:{KUBELET_HEALTHZ_PORT}/healthz"), 60,
            prepare=partial(_prepare_kubelet, node), after_healthy=partial(_wait_node_ready, node),
        ))
    comps.append(Component(
        "kube-proxy", _kube_proxy_argv, lambda c: _get_ok(f"http://{nodeconfig.KUBE_PROXY_HEALTHZ}/healthz"), 60,
        prepare=_prepare_kube_proxy, after_healthy=_deploy_coredns,
    ))
    return tuple(comps)
