"""Where the embedded cluster keeps its state, and where its binaries are.

Everything a cluster writes lives under one state directory (``KILN_STATE_DIR``,
default ``<checkout>/.kiln``) so `down --purge` can remove it and a test can
point a second cluster elsewhere. Binaries live in a cache outside the checkout
(see devcluster/build.sh), found through ``build.sh --print-bin``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SH = REPO_ROOT / "devcluster" / "build.sh"


@dataclass(frozen=True)
class StatePaths:
    """The files and folders of one cluster's state directory."""

    root: Path
    """The state directory itself (``.kiln`` by default)."""

    def __post_init__(self) -> None:
        if not self.root.is_absolute():
            raise ValueError(f"KILN_STATE_DIR must be an absolute path, got {self.root}")

    @classmethod
    def from_env(cls) -> StatePaths:
        """The state directory named by ``KILN_STATE_DIR`` or ``<checkout>/.kiln``."""
        raw = os.environ.get("KILN_STATE_DIR", "")
        return cls(Path(raw).resolve() if raw else REPO_ROOT / ".kiln")

    @property
    def pki(self) -> Path:
        """CA, serving and client certificates, service-account keys, component kubeconfigs."""
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        """One ``<component>.log`` per process."""
        return self.root / "logs"

    @property
    def run(self) -> Path:
        """One ``<component>.pid`` per process started by `up`."""
        return self.root / "run"

    @property
    def etcd_data(self) -> Path:
        """etcd's data directory (kept across `down` unless purged)."""
        return self.root / "etcd"

    @property
    def s3_data(self) -> Path:
        """Working folder of the S3 server."""
        return self.root / "minio"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (user in system:masters) for people, tests and the process node."""
        return self.root / "kubeconfig"

    @property
    def s3_env(self) -> Path:
        """Shell-style ``KEY=value`` file with the S3 endpoint and root credentials."""
        return self.root / "s3.env"

    def ensure(self) -> None:
        """Create the folders `up` writes into."""
        for d in (self.root, self.pki, self.logs, self.run, self.etcd_data, self.s3_data):
            d.mkdir(parents=True, exist_ok=True)
        # Keys live here: only root may read them.
        self.pki.chmod(0o700)


def bin_dir() -> Path:
    """The folder with every built binary, as build.sh reports it (builds nothing)."""
    override = os.environ.get("KILN_BIN_DIR")
    if override:
        return Path(override)
    out = subprocess.run([str(BUILD_SH), "--print-bin"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def crds_dir() -> Path:
    """The folder with the training-operator CRDs copied from its module source."""
    out = subprocess.run([str(BUILD_SH), "--print-crds"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())
