"""Session fixtures for tests against the embedded cluster (real API server, controllers, S3).

Nothing here is autouse: a test asks for ``cluster`` (and ``s3_bucket``) when
it needs them. ``cluster`` runs ``kiln_devcluster.cli up`` (which starts what is
not running and, on real nodes, brings the project's images up to date) and
leaves the cluster running at the end (``make cluster-down`` stops it).

Tests marked ``@pytest.mark.cluster_last`` (the `down` check) run after all
others of the session.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterlib import Cluster, bin_dir, devcluster, read_env_file, state_dir
from kiln_devcluster.s3server import Identity, create_identity
from kubernetes import config as k8s_config


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster_last: runs after every other test (it stops the cluster)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Stable partition: everything else keeps its order, `cluster_last` tests go to the end.
    items.sort(key=lambda item: item.get_closest_marker("cluster_last") is not None)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    was_up = devcluster("status").returncode == 0
    # `up` is idempotent; on real nodes it also builds the images whose content changed and imports
    # them (seconds when nothing changed, much longer on a machine that never built them).
    devcluster("up", timeout=3600)
    state = state_dir()
    env = read_env_file(state / "s3.env")
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
    _uninstall_cluster_wide_operators(c.bin / "helm", kubeconfig)
    yield c
    # The cluster stays up: other sessions may share it, and e2e reuses it. `make cluster-down`
    # (and .ci/run's exit trap) stops it; test_cluster_zz_down.py checks that `down` is clean.
    c.api.close()


def _uninstall_cluster_wide_operators(helm: Path, kubeconfig: Path) -> None:
    """Tests run their own operators, each watching its test's namespace; a kiln release that
    watches every namespace (what `make demo` installs in kiln-system) would reconcile their runs
    too, and its admission policy would judge them. It is uninstalled, saying so."""
    def helm_json(*args: str) -> object:
        out = subprocess.run([str(helm), *args, "-o", "json", f"--kubeconfig={kubeconfig}"],
                             capture_output=True, text=True, check=True, timeout=60)
        return json.loads(out.stdout or "null")

    releases = helm_json("list", "--all-namespaces")
    for rel in releases if isinstance(releases, list) else []:
        if not str(rel.get("chart", "")).startswith("kiln-"):
            continue
        values = helm_json("get", "values", rel["name"], "-n", rel["namespace"], "--all")
        operator = values.get("operator", {}) if isinstance(values, dict) else {}
        if not operator.get("watchNamespace"):
            print(f"\n[tests] uninstalling {rel['namespace']}/{rel['name']}: it watches every namespace")
            subprocess.run([str(helm), "uninstall", rel["name"], "-n", rel["namespace"], "--wait",
                            f"--kubeconfig={kubeconfig}"], check=True, capture_output=True, timeout=180)


def _fresh_bucket(cluster: Cluster) -> Iterator[str]:
    s3 = cluster.s3_client()
    name = f"kiln-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    _empty_and_remove(cluster, name)


def _empty_and_remove(cluster: Cluster, name: str) -> None:
    s3 = cluster.s3_client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


@pytest.fixture
def s3_bucket(cluster: Cluster) -> Iterator[str]:
    """A fresh, uniquely named bucket; emptied and removed after the test."""
    yield from _fresh_bucket(cluster)


@pytest.fixture
def s3_identity(cluster: Cluster) -> Iterator[Identity]:
    """A fresh S3 user owning one fresh bucket (what a namespace gets); the bucket is emptied and
    removed after the test (by root: versitygw's users cannot delete what root does not let them)."""
    ident = create_identity(cluster.s3["endpoint_url"], cluster.s3["access_key"], cluster.s3["secret_key"], "kiln-id")
    yield ident
    _empty_and_remove(cluster, ident.bucket)


@pytest.fixture(scope="module")
def s3_module_bucket(cluster: Cluster) -> Iterator[str]:
    """A fresh bucket shared by the tests of one module (e.g. one prepared dataset for all)."""
    yield from _fresh_bucket(cluster)
