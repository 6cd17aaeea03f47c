"""What each process of the embedded cluster is: its command line and health check.

Order matters: `up` starts them in the order of ``COMPONENTS`` (each waits for
the previous to be healthy), `down` stops them in reverse.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kiln_devcluster import s3server
from kiln_devcluster.nodes import node_mode
from kiln_devcluster.paths import StatePaths
from kiln_devcluster.pki import Pki

API_PORT = 6443
NODE_IP = "10.88.0.1"
SERVICE_CIDR = "10.96.0.0/16"
S3_PORT = 9000
S3_ACCESS_KEY = "kiln-admin"
S3_SECRET_KEY = "kiln-admin-secret-key"
NODE_NAME = "kiln-node-0"
TRAINING_OPERATOR_PROBE = "127.0.0.1:18081"
TRAINING_OPERATOR_WEBHOOK_PORT = 19443
KUEUE_PROBE = "127.0.0.1:18083"


@dataclass(frozen=True)
class Ctx:
    """Everything a command line is built from."""

    paths: StatePaths
    """The cluster's state directory."""
    pki: Pki
    """Generated certificates and keys."""
    bin: Path
    """Folder with the built binaries."""


@dataclass(frozen=True)
class Component:
    """One host process of the cluster."""

    name: str
    """Used for ``logs/<name>.log`` and ``run/<name>.pid``."""
    argv: Callable[[Ctx], list[str]]
    """Command line."""
    healthy: Callable[[Ctx], bool]
    """True once the process serves (polled until ``start_timeout_s``)."""
    start_timeout_s: float = 60.0
    """How long `up` waits for ``healthy`` before failing with the log's tail."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables."""
    env_from_paths: dict[str, str] = field(default_factory=dict)
    """Extra environment variables set to a StatePaths property, e.g. ``{"TMPDIR": "s3_data"}``."""
    optional: Callable[[Ctx], str | None] = lambda ctx: None
    """Returns a reason to skip this component (e.g. not built), or None to start it."""
    while_starting: Callable[[Ctx], None] = lambda ctx: None
    """Called on each poll while waiting for health (to do what a kubelet would, e.g. mount certs)."""
    prepare: Callable[[Ctx], None] = lambda ctx: None
    """Called before the process starts (write its config files)."""
    after_healthy: Callable[[Ctx], None] = lambda ctx: None
    """Called once it is healthy, also when it was running already (e.g. import images, wait Ready)."""
    before_stop: Callable[[Ctx], None] = lambda ctx: None
    """Called by `down` before the process is stopped (e.g. remove a containerd's containers)."""


def _get_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _client_tls(pki: Pki, cert: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
    ctx.load_cert_chain(str(pki.crt(cert)), str(pki.key(cert)))
    return ctx


def _unverified_tls() -> ssl.SSLContext:
    # Controller-manager and scheduler serve /healthz with a self-signed certificate of their own.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _etcd(c: Ctx) -> list[str]:
    p = c.pki
    return [
        str(c.bin / "etcd"), "--name=kiln", f"--data-dir={c.paths.etcd_data}",
        "--listen-client-urls=https://127.0.0.1:2379", "--advertise-client-urls=https://127.0.0.1:2379",
        "--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
        "--initial-cluster=kiln=http://127.0.0.1:2380", "--listen-metrics-urls=http://127.0.0.1:2381",
        f"--cert-file={p.crt('etcd-server')}", f"--key-file={p.key('etcd-server')}",
        f"--trusted-ca-file={p.ca_crt}", "--client-cert-auth",
        # A throw-away dev cluster: skip fsync (the disk is shared with builds) and keep few snapshots.
        "--unsafe-no-fsync", "--snapshot-count=10000", "--quota-backend-bytes=2147483648",
        "--log-level=warn",
    ]


def _apiserver(c: Ctx) -> list[str]:
    p = c.pki
    return [
        str(c.bin / "kube-apiserver"), "--bind-address=0.0.0.0", f"--secure-port={API_PORT}",
        f"--advertise-address={NODE_IP}", f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--etcd-servers=https://127.0.0.1:2379", f"--etcd-cafile={p.ca_crt}",
        f"--etcd-certfile={p.crt('apiserver-etcd-client')}", f"--etcd-keyfile={p.key('apiserver-etcd-client')}",
        f"--tls-cert-file={p.crt('apiserver')}", f"--tls-private-key-file={p.key('apiserver')}",
        f"--client-ca-file={p.ca_crt}",
        f"--service-account-key-file={p.sa_pub}", f"--service-account-signing-key-file={p.sa_key}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--authorization-mode=Node,RBAC", "--allow-privileged=true",
        f"--kubelet-client-certificate={p.crt('apiserver-kubelet-client')}",
        f"--kubelet-client-key={p.key('apiserver-kubelet-client')}",
        "--kubelet-preferred-address-types=InternalIP",
        # Webhook Services resolve to their endpoints: there is no kube-proxy for cluster IPs.
        "--enable-aggregator-routing=true",
        "--profiling=false", "--v=1",
    ]


def _controller_manager(c: Ctx) -> list[str]:
    p = c.pki
    kc = p.kubeconfig("controller-manager")
    return [
        str(c.bin / "kube-controller-manager"), f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1", "--leader-elect=false", "--controllers=*",
        f"--service-account-private-key-file={p.sa_key}", f"--root-ca-file={p.ca_crt}",
        f"--cluster-signing-cert-file={p.ca_crt}", f"--cluster-signing-key-file={p.ca_key}",
        # Each controller acts as its own service account, as on a real cluster (RBAC bootstrap roles).
        "--use-service-account-credentials=true", f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--profiling=false", "--v=1",
    ]


def _scheduler(c: Ctx) -> list[str]:
    kc = c.pki.kubeconfig("scheduler")
    return [
        str(c.bin / "kube-scheduler"), f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false", "--v=1",
    ]


def _s3_layout(c: Ctx) -> s3server.Layout:
    return s3server.Layout(c.paths.s3_data)


def _s3_prepare(c: Ctx) -> None:
    if not (c.bin / s3server.BINARY).exists():
        raise RuntimeError(f"{s3server.BINARY} is not built: run devcluster/build.sh {s3server.BINARY}")
    _s3_layout(c).ensure()


def _s3(c: Ctx) -> list[str]:
    # versitygw (s3server.py says why); its files live in the state dir, so `down`/`up` keeps them.
    return s3server.argv(c.bin / s3server.BINARY, _s3_layout(c), S3_PORT, S3_ACCESS_KEY, S3_SECRET_KEY)


PYTORCH_INIT_TEMPLATE = """
- name: init-pytorch
  image: kiln.local/busybox:1.35
  imagePullPolicy: Never
  resources:
    limits: {cpu: 100m, memory: 20Mi}
    requests: {cpu: 50m, memory: 10Mi}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65534
    allowPrivilegeEscalation: false
    capabilities: {drop: [ALL]}
    seccompProfile: {type: RuntimeDefault}
  command: ['sh', '-c', 'ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); err=1; for i in $(seq {{.MaxTries}}); do if nslookup {{.MasterAddr}}.$ns.svc.cluster.local; then err=0 && break; fi; echo waiting for master; sleep 2; done; exit $err']
"""
"""The workers' wait-for-master init container on real nodes: upstream's uses alpine (no registry
here) and `nslookup <name>`, which busybox's nslookup does not expand with the search path. Its
securityContext meets Pod Security `restricted`: without one the training-operator cannot create
a worker in a namespace that enforces it (upstream's template has none; see the chart README)."""


def _training_operator_init(c: Ctx) -> list[str]:
    # Real nodes only: the process node maps images by name and has no kiln.local/busybox rule.
    if node_mode() != "real":
        return []
    template = c.paths.root / "pytorch-init-container.yaml"
    template.write_text(PYTORCH_INIT_TEMPLATE)
    return [f"--pytorch-init-container-template-file={template}"]


def _training_operator(c: Ctx) -> list[str]:
    return [*_training_operator_argv(c), *_training_operator_init(c)]


def _training_operator_argv(c: Ctx) -> list[str]:
    return [
        str(c.bin / "training-operator.v1"), f"--kubeconfig={c.pki.kubeconfig('training-operator')}",
        "--enable-scheme=pytorchjob", "--metrics-bind-address=127.0.0.1:18080",
        f"--health-probe-bind-address={TRAINING_OPERATOR_PROBE}", f"--webhook-server-port={TRAINING_OPERATOR_WEBHOOK_PORT}",
        "--leader-elect=false",
    ]


def _node(c: Ctx) -> list[str]:
    return [sys.executable, "-m", "kiln_devcluster.node", "--kubeconfig", str(c.paths.kubeconfig), "--name", NODE_NAME]


def _node_missing(c: Ctx) -> str | None:
    # KILN_NO_NODE=1: control plane only (to work on the node by hand, or without one).
    if os.environ.get("KILN_NO_NODE") == "1":
        return "KILN_NO_NODE=1"
    here = Path(__file__).parent / "node" / "__main__.py"
    return None if here.exists() else "kiln_devcluster.node is not there yet"


def _binary_missing(name: str) -> Callable[[Ctx], str | None]:
    def check(c: Ctx) -> str | None:
        return None if (c.bin / name).exists() else f"{name} is not built (devcluster/build.sh)"

    return check


def _sync_webhook_certs(c: Ctx) -> None:
    from kiln_devcluster.trainingop import sync_webhook_certs  # imports this module

    sync_webhook_certs(c)


def _kueue_missing(c: Ctx) -> str | None:
    from kiln_devcluster import kueue  # imports this module

    return kueue.disabled() or _binary_missing("kueue")(c)


def _kueue_argv(c: Ctx) -> list[str]:
    from kiln_devcluster import kueue

    return kueue.argv(c)


def _kueue_prepare(c: Ctx) -> None:
    from kiln_devcluster import kueue

    kueue.prepare(c)


def environment(component: Component, paths: StatePaths) -> dict[str, str]:
    """The component's extra environment, with state paths filled in."""
    from_paths = {k: str(getattr(paths, attr)) for k, attr in component.env_from_paths.items()}
    return {**component.env, **from_paths}


def api_ready(c: Ctx) -> bool:
    return _get_ok(f"https://127.0.0.1:{API_PORT}/readyz", _client_tls(c.pki, "admin"))


CONTROL_PLANE: tuple[Component, ...] = (
    Component("etcd", _etcd, lambda c: _get_ok("http://127.0.0.1:2381/health"), 30),
    Component("kube-apiserver", _apiserver, api_ready, 120),
    Component(
        "kube-controller-manager", _controller_manager,
        lambda c: _get_ok("https://127.0.0.1:10257/healthz", _unverified_tls()), 60,
    ),
    Component(
        "kube-scheduler", _scheduler, lambda c: _get_ok("https://127.0.0.1:10259/healthz", _unverified_tls()), 60
    ),
    # Path-style only (no --virtual-domain): a Host such as minio.kiln-system.svc is never a bucket.
    Component(
        "s3", _s3, lambda c: s3server.serving(f"http://127.0.0.1:{S3_PORT}"), 60,
        prepare=_s3_prepare,
    ),
    Component(
        "training-operator", _training_operator,
        # readyz: certificates in place and webhook server listening (controllers start then).
        lambda c: _get_ok(f"http://{TRAINING_OPERATOR_PROBE}/readyz"), 90,
        # Its webhook certificates are made by its own cert rotator into this namespace.
        env={"MY_POD_NAMESPACE": "kubeflow"}, optional=_binary_missing("training-operator.v1"),
        while_starting=_sync_webhook_certs,
    ),
    Component(
        "kueue", _kueue_argv,
        # readyz: webhook server serving the CA-issued certificate (kueue.py); queues start with it.
        lambda c: _get_ok(f"http://{KUEUE_PROBE}/readyz"), 90,
        optional=_kueue_missing, prepare=_kueue_prepare,
    ),
)
"""Everything but the node(s)."""

PROCESS_NODE = Component("node", _node, lambda c: True, 10, optional=_node_missing)
"""The Python stand-in for a kubelet (KILN_NODE=process); its Node Ready is checked through the API."""

COMPONENTS: tuple[Component, ...] = (*CONTROL_PLANE, PROCESS_NODE)
"""The cluster with the process node."""
