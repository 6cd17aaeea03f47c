"""The chart's admin policy (values `policy`) refuses TrainingRuns at admission on the real API server:
the ValidatingAdmissionPolicy and binding as helm renders them, bound to one test namespace only so
other tests sharing the cluster are untouched."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from clusterlib import REPO
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from nodekit import namespace
from operatorkit import install_crd
from waiting import wait_for

pytestmark = pytest.mark.timeout(240)
GROUP, VERSION, PLURAL = "kiln.dev", "v1alpha1", "trainingruns"
ALLOWED_IMAGE = "registry.corp/kiln/kiln-trainer:0.1.0"


def _render(cluster: Any, release: str, ns: str) -> str:
    values = {"operator": {"watchNamespace": ns},
              "policy": {"allowedImagePrefixes": ["registry.corp/kiln/"], "allowedServiceAccounts": ["team-s3"]}}
    out = subprocess.run(
        [str(cluster.bin / "helm"), "template", release, str(REPO / "charts" / "kiln"), "--namespace", "kiln-system",
         "--show-only", "templates/admission-policy.yaml", "-f", "-"],
        input=yaml.safe_dump(values), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def policed_ns(cluster: Any) -> Iterator[str]:
    install_crd(cluster)
    with namespace(client.CoreV1Api(cluster.api), "vap") as ns:
        manifest = _render(cluster, f"vap-{uuid.uuid4().hex[:6]}", ns)
        path = cluster.state_dir / f"vap-{ns}.yaml"
        path.write_text(manifest)
        try:
            cluster.kubectl("apply", "-f", str(path))
            yield ns
        finally:
            cluster.kubectl("delete", "--ignore-not-found", "-f", str(path))
            path.unlink()


def _run(image: str, account: str | None = None) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
    doc["metadata"] = {"name": f"r-{uuid.uuid4().hex[:6]}"}
    doc["spec"]["image"] = image
    if account:
        doc["spec"]["storage"]["serviceAccountName"] = account
    return dict(doc)


def _refusal(cluster: Any, ns: str, body: dict[str, Any]) -> str | None:
    api = client.CustomObjectsApi(cluster.api)
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body, dry_run="All")
    except ApiException as e:
        assert e.status in (403, 422), e.body
        return str(e.body)
    return None


def test_runs_outside_the_policy_are_refused_with_the_field_named(cluster: Any, policed_ns: str) -> None:
    # The policy takes effect asynchronously after it is created: wait until it refuses.
    message = wait_for(lambda: _refusal(cluster, policed_ns, _run("docker.io/evil/miner:1")), 60,
                       "the admission policy refusing a foreign image")
    assert "spec.image: docker.io/evil/miner:1 is not under an allowed image prefix" in message
    message = _refusal(cluster, policed_ns, _run(ALLOWED_IMAGE, account="kube-admin")) or ""
    assert "spec.storage.serviceAccountName: kube-admin is not an allowed ServiceAccount" in message
    # Inside the policy: admitted (own per-run identity, or an allowed ServiceAccount).
    assert _refusal(cluster, policed_ns, _run(ALLOWED_IMAGE)) is None
    assert _refusal(cluster, policed_ns, _run(ALLOWED_IMAGE, account="team-s3")) is None


def test_the_binding_leaves_other_namespaces_alone(cluster: Any, policed_ns: str) -> None:
    wait_for(lambda: _refusal(cluster, policed_ns, _run("docker.io/evil/miner:1")), 60, "the policy active")
    with namespace(client.CoreV1Api(cluster.api), "free") as other:
        assert _refusal(cluster, other, _run("docker.io/evil/miner:1")) is None
