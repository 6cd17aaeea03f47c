"""Session fixtures for tests against the embedded cluster (real API server, controllers, S3).

Nothing here is autouse: a test asks for ``cluster`` (and ``s3_bucket``) when
it needs them. ``cluster`` runs ``kiln_devcluster.cli up`` (a quick no-op when
the cluster is already up); if this session started it, it is stopped again at
the end unless ``KILN_KEEP_CLUSTER=1``.

Tests marked ``@pytest.mark.cluster_last`` (the `down` check) run after all
others of the session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster_last: runs after every other test (it stops the cluster)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Stable partition: everything else keeps its order, `cluster_last` tests go to the end.
    items.sort(key=lambda item: item.get_closest_marker("cluster_last") is not None)


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


def _read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    was_up = devcluster("status").returncode == 0
    if not was_up:
        devcluster("up")
    state = state_dir()
    env = _read_env_file(state / "s3.env")
    kubeconfig = state / "kubeconfig"
    c = Cluster(
        kubeconfig=kubeconfig,
        api=k8s_config.new_client_from_config(config_file=str(kubeconfig)),
        bin=bin_dir(),
        s3={
            "endpoint_url": env["AWS_ENDPOINT_URL"],
            "in_cluster_endpoint_url": env["S3_ENDPOINT_IN_CLUSTER"],
            "access_key": env["AWS_ACCESS_KEY_ID"],
            "secret_key": env["AWS_SECRET_ACCESS_KEY"],
        },
        state_dir=state,
        started_here=not was_up,
    )
    yield c
    c.api.close()
    if c.started_here and os.environ.get("KILN_KEEP_CLUSTER") != "1":
        devcluster("down")


@pytest.fixture
def s3_bucket(cluster: Cluster) -> Iterator[str]:
    """A fresh, uniquely named bucket; emptied and removed after the test."""
    s3 = cluster.s3_client()
    name = f"kiln-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)
