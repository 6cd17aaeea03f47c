"""The chart with the built helm: lint, render every CI scenario, install (operator as a pod on the
process node), reconcile a run through the installed operator, `helm test`, uninstall."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from clusterlib import REPO
from kubernetes import client
from nodekit import namespace
from operatorkit import children, condition, create_run, get_run, phase, run_namespace, tiny_run
from waiting import wait_for

pytestmark = pytest.mark.timeout(600)
CHART = REPO / "charts" / "kiln"


def helm(cluster: Any, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(cluster.bin / "helm"), f"--kubeconfig={cluster.kubeconfig}", *args],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"helm {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def has_helm(cluster: Any) -> None:
    if not (cluster.bin / "helm").exists():
        pytest.fail(f"no helm in {cluster.bin}: run `make cluster-build`")


def test_lint_and_render_every_scenario(cluster: Any, has_helm: None) -> None:
    helm(cluster, "lint", str(CHART), "--strict")
    for values in sorted((CHART / "ci").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(helm(cluster, "template", "kiln", str(CHART), "-f", str(values),
                                                   "--namespace", "kiln-system").stdout) if d]
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "ServiceAccount", "Service"} <= kinds, (values.name, kinds)
        scoped = yaml.safe_load(values.read_text()).get("operator", {}).get("watchNamespace")
        assert ("Role" if scoped else "ClusterRole") in kinds, values.name
    bad = subprocess.run([str(cluster.bin / "helm"), "template", "kiln", str(CHART), "--set", "operatr.x=1"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "operatr" in bad.stderr, "values.schema.json must refuse unknown keys"


@pytest.fixture
def release(cluster: Any, has_helm: None) -> Iterator[tuple[str, str]]:
    """The chart installed into its own namespace, watching a second namespace (no clash with other
    operators on the shared cluster)."""
    core = client.CoreV1Api(cluster.api)
    with namespace(core, "chart") as ns, run_namespace(cluster, "runs") as watched:
        name = f"kiln-{uuid.uuid4().hex[:5]}"
        helm(cluster, "install", name, str(CHART), "-n", ns, "-f", str(CHART / "ci" / "devcluster-values.yaml"),
             "--set", f"operator.watchNamespace={watched}", "--wait", "--timeout", "4m")
        try:
            yield ns, watched
        finally:
            helm(cluster, "uninstall", name, "-n", ns, "--wait")


def test_installed_operator_reconciles_and_passes_helm_test(cluster: Any, release: tuple[str, str],
                                                            s3_bucket: str) -> None:
    ns, watched = release
    body = tiny_run(cluster, s3_bucket, name="charted")
    create_run(cluster, watched, body)
    wait_for(lambda: phase(cluster, watched, "charted") in ("Preparing", "Training"), 120,
             "installed operator moves the run to Preparing")
    run = get_run(cluster, watched, "charted")
    assert condition(run, "Ready")["reason"] in ("PreflightPassed", "DataPrepared")
    # The operator pod's RBAC lets it create every child kind (the Job comes on the next tick).
    got = wait_for(lambda: (c := children(cluster, watched, "charted")).get(("Job", "charted-prepare")) and c,
                   60, "prepare Job created by the installed operator")
    assert ("Role", "charted-trainer") in got and ("ConfigMap", "charted-config") in got
    deployments = client.AppsV1Api(cluster.api).list_namespaced_deployment(ns).items
    (deploy,) = deployments
    pod_sc = deploy.spec.template.spec.containers[0].security_context
    assert pod_sc.read_only_root_filesystem and pod_sc.allow_privilege_escalation is False
    release_name = deploy.metadata.labels["app.kubernetes.io/instance"]
    helm(cluster, "test", release_name, "-n", ns, "--timeout", "3m")
