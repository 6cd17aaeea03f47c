"""The real API server's PodSecurity admission judges every pod the operator would create, in a
namespace that enforces `restricted` (tests/unit/operator/test_security_restricted.py checks the same
objects without a cluster).

Each pod template is sent as a Pod with ``dryRun=All``: admission (PodSecurity and ServiceAccount
included) runs in full, nothing is stored or scheduled, so no image is needed.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from clusterlib import REPO
from kiln_api.trainingrun import parse_spec
from kiln_operator import rollout
from kiln_operator.builders.common import Run
from kiln_operator.builders.export_job import build_export_job
from kiln_operator.builders.indexed_job import build_indexed_job
from kiln_operator.builders.prepare_job import build_prepare_job
from kiln_operator.builders.pytorchjob import build_pytorchjob
from kiln_operator.serving import builders as sb
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from nodekit import delete_namespace
from waiting import wait_for

pytestmark = pytest.mark.timeout(180)
ENFORCE = {"pod-security.kubernetes.io/enforce": "restricted",
           "pod-security.kubernetes.io/enforce-version": "latest"}


@pytest.fixture
def restricted_ns(cluster: Any) -> Iterator[str]:
    core = client.CoreV1Api(cluster.api)
    name = f"psa-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name, "labels": ENFORCE}})
    wait_for(lambda: core.read_namespaced_service_account("default", name), 60, f"default SA in {name}")
    for sa in ("psa-trainer", "team-s3"):  # the identities the pods name must exist for admission
        core.create_namespaced_service_account(name, {"metadata": {"name": sa}})
    try:
        yield name
    finally:
        delete_namespace(core, name)


def _run(ns: str, service_account: str | None) -> Run:
    raw = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())["spec"]
    if service_account:
        raw["storage"]["serviceAccountName"] = service_account
    return Run("psa", ns, "00000000-0000-0000-0000-0000000000aa", parse_spec(raw))


def _templates(run: Run) -> dict[str, dict[str, Any]]:
    target = rollout.serving_target(run)
    owners = [build_prepare_job(run), build_pytorchjob(run), build_indexed_job(run), build_export_job(run),
              sb.build_serving_deployment(target), sb.build_canary_deployment(target, 3, run.name),
              sb.build_gate_job(target, run=run.name, version=3, canary_url="10.0.0.1:8001", prompts=["hi"],
                                max_latency_ms=1000, trainer_image=run.spec.image)]
    out = {}
    for o in owners:
        if o["kind"] == "PyTorchJob":
            for role, r in o["spec"]["pytorchReplicaSpecs"].items():
                out[f"{o['metadata']['name']}-{role.lower()}"] = r["template"]["spec"]
        else:
            out[f"{o['kind'].lower()}-{o['metadata']['name']}"] = o["spec"]["template"]["spec"]
    return out


def _refusal(core: client.CoreV1Api, ns: str, name: str, spec: dict[str, Any]) -> str | None:
    """None when admission accepts a pod with ``spec``, else the API server's message."""
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name[:63]}, "spec": spec}
    try:
        core.create_namespaced_pod(ns, body, dry_run="All")
    except ApiException as e:
        return str(e.body)
    return None


@pytest.mark.parametrize("service_account", [None, "team-s3"], ids=["own-sa", "workload-identity"])
def test_every_operator_pod_is_admitted_under_restricted(cluster: Any, restricted_ns: str,
                                                         service_account: str | None) -> None:
    core = client.CoreV1Api(cluster.api)
    templates = _templates(_run(restricted_ns, service_account))
    assert len(templates) == 8  # prepare, master, worker, indexed, export, serving, canary, gate
    refused = {n: _refusal(core, restricted_ns, n, spec) for n, spec in templates.items()}
    assert {n: r for n, r in refused.items() if r} == {}


def test_the_namespace_really_enforces_restricted(cluster: Any, restricted_ns: str) -> None:
    """The control: the gate pod as it was before (no securityContext) is refused, naming the checks."""
    core = client.CoreV1Api(cluster.api)
    gate = copy.deepcopy(_templates(_run(restricted_ns, None))["job-psa-gate-v3"])
    gate.pop("securityContext")
    gate["containers"][0].pop("securityContext")
    message = _refusal(core, restricted_ns, "old-gate", gate)
    assert message is not None and "violates PodSecurity" in message
    assert "allowPrivilegeEscalation" in message and "runAsNonRoot" in message
