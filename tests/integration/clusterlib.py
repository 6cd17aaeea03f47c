"""Helpers shared by the integration tests: the `Cluster` handle and the devcluster CLI.

Kept out of conftest.py so test modules can import it by a unique name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from kubernetes import client as k8s_client

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def devcluster(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python -m kiln_devcluster.cli ARGS`` and return it (raises with its output on failure)."""
    out = subprocess.run(
        [PY, "-m", "kiln_devcluster.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0 and args[0] != "status":
        raise RuntimeError(f"kiln_devcluster.cli {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def state_dir() -> Path:
    raw = os.environ.get("KILN_STATE_DIR", "")
    return Path(raw).resolve() if raw else REPO / ".kiln"


def bin_dir() -> Path:
    out = subprocess.run([str(REPO / "devcluster" / "build.sh"), "--print-bin"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


@dataclass
class Cluster:
    """Handles on the running embedded cluster."""

    kubeconfig: Path
    """Admin kubeconfig (system:masters)."""
    api: k8s_client.ApiClient
    """Kubernetes API client configured from ``kubeconfig``."""
    bin: Path
    """Folder with the built binaries (kubectl, helm, ...)."""
    s3: dict[str, str]
    """endpoint_url (from the host), in_cluster_endpoint_url (from pods), access_key, secret_key."""
    state_dir: Path
    """The cluster's state directory (.kiln)."""
    started_here: bool = field(default=False)
    """True when this test session ran `up` from a stopped cluster."""

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl with the admin kubeconfig."""
        out = subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True, text=True, timeout=timeout,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out

    def s3_client(self) -> Any:
        """A boto3 S3 client for the cluster's S3 server, from the host."""
        return boto3.client(
            "s3", endpoint_url=self.s3["endpoint_url"], aws_access_key_id=self.s3["access_key"],
            aws_secret_access_key=self.s3["secret_key"], region_name="us-east-1",
        )


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}
