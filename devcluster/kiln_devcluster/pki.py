"""The cluster's certificates, service-account keys and kubeconfigs.

One self-signed CA (``pki/ca.crt`` + ``ca.key``; the process node signs its
kubelet serving certificate with it) issues every serving and client
certificate. Client identities follow the Kubernetes conventions: the CN is the
user name and O the groups, so RBAC's bootstrap roles for
``system:kube-controller-manager`` and ``system:kube-scheduler`` apply as-is.

Generation is idempotent: a file that exists is kept; a new CA re-issues all.
ECDSA P-256 keys throughout: quick to generate and accepted everywhere
(including as the service-account signing key, ES256).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kiln_devcluster.nodes import MAX_NODES
from kiln_devcluster.paths import StatePaths

VALIDITY = dt.timedelta(days=3650)
"""Dev-cluster certificates outlive the state directory they sit in."""

APISERVER_SANS = (
    "127.0.0.1",
    "10.88.0.1",
    "10.96.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
"""Every name a client may use for the API server: loopback, the bridge (pods),
the ``kubernetes`` Service's cluster IP and DNS names."""


@dataclass(frozen=True)
class CertSpec:
    """One certificate to issue from the cluster CA."""

    name: str
    """File stem under ``pki/``: writes ``<name>.crt`` and ``<name>.key``."""
    common_name: str
    """Subject CN; for client certificates this is the Kubernetes user name."""
    groups: tuple[str, ...] = ()
    """Subject O entries; for client certificates these are the Kubernetes groups."""
    sans: tuple[str, ...] = ()
    """DNS names and IP addresses (serving certificates only)."""
    server: bool = False
    """Issue for TLS serving (serverAuth) rather than only clientAuth."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"CertSpec.name must be a plain file stem, got {self.name!r}")
        if self.server and not self.sans:
            raise ValueError(f"CertSpec.sans: serving certificate {self.name} needs at least one SAN")


CERTS: tuple[CertSpec, ...] = (
    CertSpec("apiserver", "kube-apiserver", sans=APISERVER_SANS, server=True),
    CertSpec("apiserver-etcd-client", "kube-apiserver-etcd-client"),
    # The API server presents this to the node's kubelet port for `kubectl logs`.
    CertSpec("apiserver-kubelet-client", "kube-apiserver-kubelet-client", groups=("system:masters",)),
    CertSpec("etcd-server", "etcd", sans=("127.0.0.1", "localhost"), server=True),
    CertSpec("admin", "kiln-admin", groups=("system:masters",)),
    CertSpec("controller-manager", "system:kube-controller-manager"),
    CertSpec("scheduler", "system:kube-scheduler"),
    # A dev cluster: the training-operator gets admin rights instead of a
    # hand-maintained ClusterRole copied from its manifests.
    CertSpec("training-operator", "kiln-training-operator", groups=("system:masters",)),
    # Kueue likewise; its webhook serves a certificate of this CA (no cert rotator of its own).
    CertSpec("kueue", "kiln-kueue", groups=("system:masters",)),
    CertSpec("kueue-webhook", "kueue-webhook-service.kueue-system.svc", server=True,
             sans=("kueue-webhook-service.kueue-system.svc", "kueue-webhook-service.kueue-system.svc.cluster.local")),
    # Real nodes: the Node authorizer and NodeRestriction know a kubelet by this CN/O pair;
    # RBAC's bootstrap binding system:node-proxier names the user system:kube-proxy.
    *(CertSpec(f"kubelet-kiln-node-{i}", f"system:node:kiln-node-{i}", groups=("system:nodes",)) for i in range(MAX_NODES)),
    CertSpec("kube-proxy", "system:kube-proxy"),
)
KUBECONFIGS = ("controller-manager", "scheduler", "training-operator", "kueue", "kube-proxy",
               *(f"kubelet-kiln-node-{i}" for i in range(MAX_NODES)))
"""Components that get ``pki/<name>.kubeconfig`` (client certificate ``<name>``)."""


@dataclass
class Pki:
    """Paths of the generated material (all under ``StatePaths.pki``)."""

    dir: Path
    """The ``pki/`` folder."""
    issued: list[str] = field(default_factory=list)
    """Names of files written by the last `ensure_pki` (empty when all existed)."""

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def sa_key(self) -> Path:
        """Service-account token signing key (private, for the API server and controller-manager)."""
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        """Service-account token verification key."""
        return self.dir / "sa.pub"

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def kubeconfig(self, name: str) -> Path:
        """Kubeconfig of a component that authenticates with certificate ``name``."""
        return self.dir / f"{name}.kubeconfig"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an ECDSA key")
    return key


def _name(cn: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _san(entries: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for entry in entries:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            names.append(x509.DNSName(entry))
    return x509.SubjectAlternativeName(names)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    # Backdate a little so a clock a few seconds behind still accepts it.
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
    )


def _make_ca(pki: Pki) -> None:
    key = _new_key()
    name = _name("kiln-ca")
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(pki.ca_key, key)
    pki.ca_crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def issue(pki: Pki, spec: CertSpec) -> None:
    """Write ``<name>.crt``/``.key`` for ``spec``, signed by the cluster CA."""
    ca_key = _load_key(pki.ca_key)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_crt.read_bytes())
    key = _new_key()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if spec.server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        _builder(_name(spec.common_name, spec.groups), ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if spec.sans:
        builder = builder.add_extension(_san(spec.sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(pki.key(spec.name), key)
    pki.crt(spec.name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _make_sa_keys(pki: Pki) -> None:
    key = _new_key()
    _write_key(pki.sa_key, key)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pki.sa_pub.write_bytes(pub)


def kubeconfig_dict(server: str, pki: Pki, cert: str, *, embed: bool) -> dict[str, object]:
    """A kubeconfig for user ``cert``; ``embed`` inlines the PEMs so the file stands alone."""

    def ref(field_name: str, path: Path) -> dict[str, str]:
        if embed:
            return {f"{field_name}-data": base64.b64encode(path.read_bytes()).decode()}
        return {field_name: str(path)}

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kiln", "cluster": {"server": server, **ref("certificate-authority", pki.ca_crt)}}],
        "users": [
            {
                "name": cert,
                "user": {**ref("client-certificate", pki.crt(cert)), **ref("client-key", pki.key(cert))},
            }
        ],
        "contexts": [{"name": "kiln", "context": {"cluster": "kiln", "user": cert}}],
        "current-context": "kiln",
    }


def ensure_pki(paths: StatePaths, server: str = "https://127.0.0.1:6443") -> Pki:
    """Create whatever of the CA, certificates, SA keys and kubeconfigs is missing."""
    paths.ensure()
    pki = Pki(paths.pki)
    fresh_ca = not (pki.ca_crt.exists() and pki.ca_key.exists())
    if fresh_ca:
        _make_ca(pki)
        pki.issued.append("ca")
    for spec in CERTS:
        if fresh_ca or not (pki.crt(spec.name).exists() and pki.key(spec.name).exists()):
            issue(pki, spec)
            pki.issued.append(spec.name)
    if not (pki.sa_key.exists() and pki.sa_pub.exists()):
        _make_sa_keys(pki)
        pki.issued.append("sa")
    for component in KUBECONFIGS:
        _write_if_changed(pki.kubeconfig(component), kubeconfig_dict(server, pki, component, embed=False))
    _write_if_changed(paths.kubeconfig, kubeconfig_dict(server, pki, "admin", embed=True))
    paths.kubeconfig.chmod(0o600)
    return pki


def _write_if_changed(path: Path, doc: dict[str, object]) -> None:
    text = yaml.safe_dump(doc, sort_keys=False)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
