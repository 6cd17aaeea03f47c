"""Unit tests of the embedded cluster's PKI, process handling and command lines (no cluster)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kiln_devcluster import procs
from kiln_devcluster.components import COMPONENTS, Ctx
from kiln_devcluster.net import BridgeConfig
from kiln_devcluster.paths import StatePaths
from kiln_devcluster.pki import APISERVER_SANS, CertSpec, ensure_pki


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    return StatePaths(tmp_path / "state")


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_apiserver_certificate_covers_every_name_and_chains_to_the_ca(paths: StatePaths) -> None:
    pki = ensure_pki(paths)
    cert, ca = _cert(pki.crt("apiserver")), _cert(pki.ca_crt)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    assert names == set(APISERVER_SANS)
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages


def test_client_identities_follow_kubernetes_conventions(paths: StatePaths) -> None:
    pki = ensure_pki(paths)
    admin = _cert(pki.crt("admin")).subject
    assert admin.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    cm = _cert(pki.crt("controller-manager")).subject
    assert cm.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:kube-controller-manager"
    assert (paths.pki / "ca.key").stat().st_mode & 0o077 == 0


def test_pki_is_idempotent_and_a_new_ca_reissues_everything(paths: StatePaths) -> None:
    first = ensure_pki(paths)
    serial = _cert(first.crt("admin")).serial_number
    assert ensure_pki(paths).issued == []
    assert _cert(first.crt("admin")).serial_number == serial
    first.ca_crt.unlink()
    again = ensure_pki(paths)
    assert "admin" in again.issued and _cert(again.crt("admin")).serial_number != serial


def test_admin_kubeconfig_is_self_contained(paths: StatePaths) -> None:
    import yaml

    ensure_pki(paths)
    doc = yaml.safe_load(paths.kubeconfig.read_text())
    assert doc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert "certificate-authority-data" in doc["clusters"][0]["cluster"]
    assert "client-key-data" in doc["users"][0]["user"]


def test_bad_specs_are_rejected_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sans"):
        CertSpec("srv", "srv", server=True)
    with pytest.raises(ValueError, match="BridgeConfig.name"):
        BridgeConfig(name="a-name-longer-than-15")
    with pytest.raises(ValueError, match="KILN_STATE_DIR"):
        StatePaths(Path("relative/dir"))


def test_processes_are_tracked_found_by_marker_and_stopped(paths: StatePaths) -> None:
    paths.ensure()
    pidfile = paths.run / "sleeper.pid"
    # Ignores SIGTERM, so stop() must escalate to SIGKILL.
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    proc = procs.start([sys.executable, "-c", code], log=paths.logs / "s.log", pidfile=pidfile, cluster=paths.root)
    assert procs.read_pidfile(pidfile) == proc
    assert proc in list(procs.marked(paths.root))
    assert list(procs.marked(paths.root / "other")) == []
    procs.stop(proc, grace_s=0.5)
    assert not procs.alive(proc)
    assert procs.read_pidfile(pidfile) is None


def test_component_command_lines_point_into_the_state_dir(paths: StatePaths) -> None:
    pki = ensure_pki(paths)
    ctx = Ctx(paths=paths, pki=pki, bin=Path("/opt/bin"))
    argv = {c.name: c.argv(ctx) for c in COMPONENTS}
    assert f"--data-dir={paths.etcd_data}" in argv["etcd"]
    api = argv["kube-apiserver"]
    for flag in ("--advertise-address=10.88.0.1", "--authorization-mode=Node,RBAC",
                 "--service-cluster-ip-range=10.96.0.0/16", f"--service-account-key-file={pki.sa_pub}"):
        assert flag in api
    assert f"--service-account-private-key-file={pki.sa_key}" in argv["kube-controller-manager"]
    assert argv["kube-apiserver"][0] == "/opt/bin/kube-apiserver"


def test_up_without_built_binaries_names_them_and_starts_nothing(paths: StatePaths, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from kiln_devcluster import controlplane

    empty = tmp_path / "bin"
    empty.mkdir()
    (empty / "kubectl").touch()
    monkeypatch.setenv("KILN_BIN_DIR", str(empty))
    with pytest.raises(FileNotFoundError, match="etcd, kube-apiserver, kube-controller-manager, kube-scheduler"):
        controlplane.up(paths)
    assert list(paths.run.glob("*.pid")) == []


def test_purge_removes_the_state_dir_and_stops_its_processes(paths: StatePaths, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from kiln_devcluster import controlplane, net

    monkeypatch.setenv("KILN_BIN_DIR", str(tmp_path))
    removed: list[bool] = []
    monkeypatch.setattr(net, "remove_bridge", lambda *a: removed.append(True))
    paths.ensure()
    stray = procs.start([sys.executable, "-c", "import time; time.sleep(60)"], log=paths.logs / "x.log",
                        pidfile=paths.run / "stray.pid", cluster=paths.root)
    controlplane.down(paths, purge=True)
    assert not procs.alive(stray)
    assert not paths.root.exists()
    # The bridge goes only when no API server listens any more (another cluster may use it).
    assert removed == ([] if controlplane._port_open(6443) else [True])
