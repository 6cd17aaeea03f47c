"""`up`, `down` and `status` of the embedded cluster.

`up` is idempotent: a component whose pid file names a live process is not
started again, and when everything is already running it only checks the API
server and returns. Each start waits for the component's health check with a
deadline and, on failure, shows the tail of its log.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from kiln_devcluster import bootstrap, kueue, net, nodecleanup, procs
from kiln_devcluster.components import (
    API_PORT,
    COMPONENTS,
    CONTROL_PLANE,
    NODE_NAME,
    S3_ACCESS_KEY,
    S3_PORT,
    S3_SECRET_KEY,
    Component,
    Ctx,
    api_ready,
    environment,
)
from kiln_devcluster.images.nodes import ensure_in_nodes
from kiln_devcluster.nodes import MAX_NODES, POD_NETWORK, node_mode, node_specs
from kiln_devcluster.paths import StatePaths, bin_dir, crds_dir
from kiln_devcluster.pki import Pki, ensure_pki
from kiln_devcluster.realnode import real_node_components

REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


@dataclass(frozen=True)
class UpOptions:
    """How `up` behaves."""

    node_ready_timeout_s: float = 90.0
    """How long to wait for the process node's Node object to become Ready."""

    def __post_init__(self) -> None:
        if self.node_ready_timeout_s <= 0:
            raise ValueError(f"node_ready_timeout_s must be positive, got {self.node_ready_timeout_s}")


def say(msg: str) -> None:
    print(f"[kiln-dev] {msg}", flush=True)


@contextmanager
def _step(what: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    say(f"{what} ({time.monotonic() - start:.1f}s)")


def _pidfile(paths: StatePaths, c: Component) -> procs.Running | None:
    return procs.read_pidfile(paths.run / f"{c.name}.pid")


def _log_tail(paths: StatePaths, name: str, lines: int = 25) -> str:
    try:
        return "\n".join((paths.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_healthy(ctx: Ctx, c: Component, proc: procs.Running) -> None:
    deadline = time.monotonic() + c.start_timeout_s
    while time.monotonic() < deadline:
        c.while_starting(ctx)
        if c.healthy(ctx):
            return
        if not procs.alive(proc):
            raise RuntimeError(f"{c.name} exited during start; last log lines:\n{_log_tail(ctx.paths, c.name)}")
        time.sleep(0.25)
    raise TimeoutError(
        f"{c.name} not healthy after {c.start_timeout_s:.0f}s; last log lines:\n{_log_tail(ctx.paths, c.name)}"
    )


def context(paths: StatePaths, pki: Pki | None = None) -> Ctx:
    return Ctx(paths=paths, pki=pki or Pki(paths.pki), bin=bin_dir())


def _check_binaries(ctx: Ctx) -> None:
    missing = [b for b in REQUIRED_BINARIES if not (ctx.bin / b).exists()]
    if missing:
        raise FileNotFoundError(
            f"missing binaries in {ctx.bin}: {', '.join(missing)}; run devcluster/build.sh (make cluster-build)"
        )


def cluster_components(paths: StatePaths) -> tuple[Component, ...]:
    """What `up` starts: the control plane, then the process node (KILN_NODE=process) or the
    real nodes (KILN_NODE=real; KILN_NODES of them); only the control plane with KILN_NO_NODE=1."""
    if node_mode() == "process":
        return COMPONENTS
    if os.environ.get("KILN_NO_NODE") == "1":
        return CONTROL_PLANE
    return (*CONTROL_PLANE, *real_node_components(node_specs(paths)))


def _every_component(paths: StatePaths) -> tuple[Component, ...]:
    """What `down` stops: whatever any mode may have started."""
    return (*COMPONENTS, *real_node_components(node_specs(paths, MAX_NODES)))


def _already_up(paths: StatePaths) -> bool:
    ctx = context(paths)
    wanted = [c for c in cluster_components(paths) if c.optional(ctx) is None]
    return all(_pidfile(paths, c) for c in wanted) and ctx.pki.ca_crt.exists() and api_ready(ctx)


def _write_s3_env(paths: StatePaths) -> None:
    paths.s3_env.write_text(
        f"AWS_ACCESS_KEY_ID={S3_ACCESS_KEY}\nAWS_SECRET_ACCESS_KEY={S3_SECRET_KEY}\n"
        f"AWS_ENDPOINT_URL=http://127.0.0.1:{S3_PORT}\nS3_ENDPOINT_IN_CLUSTER="
        f"http://{bootstrap.S3_SERVICE}.{bootstrap.S3_NAMESPACE}.svc:{S3_PORT}\nAWS_DEFAULT_REGION=us-east-1\n"
    )


def up(paths: StatePaths, opts: UpOptions = UpOptions()) -> None:
    """Start whatever of the cluster is not running and wait until all of it is healthy."""
    t0 = time.monotonic()
    paths.ensure()
    if _already_up(paths):
        _ensure_images(paths)
        say(f"already up ({time.monotonic() - t0:.1f}s); kubeconfig: {paths.kubeconfig}")
        return
    with _step("certificates and kubeconfigs ready"):
        pki = ensure_pki(paths)
    ctx = context(paths, pki)
    _check_binaries(ctx)
    components = cluster_components(paths)
    with _step(f"bridge {net.BridgeConfig().name} up"):
        net.ensure_bridge()
        if node_mode() == "real":
            net.ensure_node_addresses([n.ip for n in node_specs(paths)])
            net.ensure_masquerade(POD_NETWORK)
    _write_s3_env(paths)
    for c in components:
        reason = c.optional(ctx)
        if reason:
            say(f"skipping {c.name}: {reason}")
            continue
        proc = _pidfile(paths, c)
        with _step(f"{c.name} healthy" + (" (was running)" if proc else "")):
            if proc is None:
                c.prepare(ctx)
                proc = procs.start(
                    c.argv(ctx), log=paths.logs / f"{c.name}.log", pidfile=paths.run / f"{c.name}.pid",
                    cluster=paths.root, env=environment(c, paths),
                )
            _wait_healthy(ctx, c, proc)
        c.after_healthy(ctx)
        if c.name == "kube-apiserver":
            _apply_base(ctx)
        if c.name == "node":
            with _step(f"Node {NODE_NAME} Ready"):
                bootstrap.wait_node_ready(ctx, NODE_NAME, opts.node_ready_timeout_s, partial(procs.alive, proc))
    _ensure_images(paths)
    say(f"up in {time.monotonic() - t0:.1f}s; export KUBECONFIG={paths.kubeconfig}")


def _ensure_images(paths: StatePaths) -> None:
    """Real nodes run the project's own images: build what changed, import what a node lacks."""
    if node_mode() == "real" and os.environ.get("KILN_NO_NODE") != "1":
        ensure_in_nodes(context(paths))


def _apply_base(ctx: Ctx) -> None:
    crd = crds_dir() / "kubeflow.org_pytorchjobs.yaml"
    with _step("base objects applied (namespaces, S3 Service, PyTorchJob CRD)"):
        bootstrap.apply_base(ctx, crd if crd.exists() else None)
    if _kueue_wanted(ctx):
        with _step("Kueue CRDs and webhooks applied"):
            bootstrap.apply_kueue(ctx, kueue.crds_dir())
    real = node_mode() == "real"
    wanted = {n.name for n in node_specs(ctx.paths)} if real else {NODE_NAME}
    if pruned := bootstrap.prune_nodes(ctx, wanted, real):
        say(f"deleted Node objects of another node mode or count: {', '.join(pruned)}")


def _kueue_wanted(ctx: Ctx) -> bool:
    return kueue.disabled() is None and (ctx.bin / "kueue").exists() and kueue.crds_dir().is_dir()


def down(paths: StatePaths, purge: bool = False) -> None:
    """Stop every process of this cluster (pid files, then strays), remove the bridge, optionally the state."""
    t0 = time.monotonic()
    ctx = context(paths)
    for c in reversed(_every_component(paths)):
        pidfile = paths.run / f"{c.name}.pid"
        proc = procs.read_pidfile(pidfile)
        if proc is not None:
            c.before_stop(ctx)
            # The node gets longer: it stops its pods with their grace periods.
            procs.stop(proc, grace_s=30.0 if c.name == "node" else 10.0)
            say(f"stopped {c.name} (pid {proc.pid})")
        pidfile.unlink(missing_ok=True)
    strays = list(procs.marked(paths.root, bin_dir()))
    for proc in strays:
        say(f"stopping stray pid {proc.pid}")
        procs.stop(proc, grace_s=5.0)
    _clean_real_nodes(paths)
    if _port_open(API_PORT):
        # Another cluster (another state dir) still serves: its pods use the bridge.
        say(f"keeping bridge {net.BridgeConfig().name}: an API server still listens on :{API_PORT}")
    else:
        net.remove_bridge()
    if purge and paths.root.exists():
        shutil.rmtree(paths.root)
        say(f"removed {paths.root}")
    say(f"down in {time.monotonic() - t0:.1f}s")


def _clean_real_nodes(paths: StatePaths) -> None:
    """Remove what the real nodes' processes leave on the host (see nodecleanup.py)."""
    for node in node_specs(paths, MAX_NODES):
        if node.state.exists():
            for did in nodecleanup.clean_node(node):
                say(f"{node.name}: {did}")
    if removed := nodecleanup.remove_iptables_chains():
        say(f"removed {removed} iptables chains (kube-proxy, CNI, masquerade)")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def status(paths: StatePaths) -> bool:
    """Print each component's state; True when everything that should run is running and healthy."""
    ctx = context(paths)
    ok, total_mib = True, 0.0
    for c in cluster_components(paths):
        reason = c.optional(ctx)
        proc = _pidfile(paths, c)
        if reason and proc is None:
            state = f"skipped ({reason})"
        elif proc is None:
            state, ok = "down", False
        elif ctx.pki.ca_crt.exists() and c.healthy(ctx):
            rss = procs.rss_mib(proc)
            total_mib += rss
            state = f"up (pid {proc.pid}, {rss:.0f} MiB RSS)"
        else:
            state, ok = f"running but unhealthy (pid {proc.pid})", False
        print(f"{c.name:<24} {state}")
    if node_mode() == "real":
        for node in node_specs(paths):
            pods_mib = nodecleanup.pods_rss_mib(node)
            total_mib += pods_mib
            print(f"{node.name + ' pods':<24} {pods_mib:.0f} MiB RSS (containers in its cgroup)")
    print(f"{'total RSS':<24} {total_mib:.0f} MiB")
    return ok
