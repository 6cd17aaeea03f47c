"""Every pod the operator creates passes Pod Security `restricted` (checked here without a cluster;
tests/integration/test_security_pod_admission.py has the real API server judge the same objects)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kiln_api.trainingrun import parse_spec
from kiln_op_testlib import gpu_spec_dict, load_example
from kiln_operator import rollout
from kiln_operator.builders.common import Run
from kiln_operator.builders.export_job import build_export_job
from kiln_operator.builders.indexed_job import build_indexed_job
from kiln_operator.builders.prepare_job import build_prepare_job
from kiln_operator.builders.pytorchjob import build_pytorchjob
from kiln_operator.serving import builders as sb

# The volume types `restricted` allows (Kubernetes docs, Pod Security Standards).
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
HOST_FIELDS = ("hostNetwork", "hostPID", "hostIPC", "hostUsers")


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The `restricted` profile's checks (baseline included) that ``pod`` (a PodSpec) fails."""
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    for f in HOST_FIELDS[:3]:
        if pod.get(f):
            out.append(f"{f} is set")
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {v['name']}: {sorted(kinds - RESTRICTED_VOLUMES)} not allowed")
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("pod seccompProfile Unconfined")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser 0")
    for c in (pod.get("initContainers") or []) + pod["containers"]:
        sc, name = c.get("securityContext") or {}, c["name"]
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            out.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost, is {seccomp}")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities {caps['add']}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"{name}: hostPort")
    return out


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "PyTorchJob":
        return [r["template"]["spec"] for r in obj["spec"]["pytorchReplicaSpecs"].values()]
    return [obj["spec"]["template"]["spec"]]


def every_pod_owner(run: Run) -> list[dict[str, Any]]:
    """Each builder's output for ``run``: run children and the serving target's objects."""
    target = rollout.serving_target(run)
    return [build_prepare_job(run), build_pytorchjob(run), build_indexed_job(run), build_export_job(run),
            sb.build_serving_deployment(target), sb.build_canary_deployment(target, 3, run.name),
            sb.build_gate_job(target, run=run.name, version=3, canary_url="10.0.0.1:8001", prompts=["hi"],
                              max_latency_ms=1000, trainer_image=run.spec.image)]


def _runs() -> list[Run]:
    tiny = parse_spec(load_example("tiny.yaml")["spec"])
    gpu = parse_spec(gpu_spec_dict())
    return [Run("tiny", "team-a", "uid-1", tiny), Run("big", "team-a", "uid-2", gpu)]


@pytest.mark.parametrize("run", _runs(), ids=lambda r: r.name)
def test_every_operator_pod_passes_restricted(run: Run) -> None:
    found = {f"{o['kind']}/{o['metadata']['name']}": restricted_violations(p)
             for o in every_pod_owner(run) for p in _pod_specs(o)}
    assert len(found) == 7
    assert {k: v for k, v in found.items() if v} == {}


def test_checker_catches_each_kind_of_violation() -> None:
    """The checker above is what the test relies on: each breach must be reported."""
    pod = _pod_specs(build_export_job(_runs()[0]))[0]
    assert restricted_violations(pod) == []
    breaches = [
        lambda p: p.update(hostNetwork=True),
        lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        lambda p: p["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
        lambda p: p["containers"][0]["securityContext"].pop("runAsNonRoot") and p["securityContext"].pop(
            "runAsNonRoot"),
        lambda p: p["containers"][0]["securityContext"].update(capabilities={"add": ["SYS_ADMIN"]}),
        lambda p: p["containers"][0]["securityContext"].pop("seccompProfile") and p["securityContext"].pop(
            "seccompProfile"),
        lambda p: p["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]),
    ]
    for breach in breaches:
        bad = copy.deepcopy(pod)
        breach(bad)
        assert restricted_violations(bad), breach


def test_tokens_are_mounted_only_where_the_api_is_used() -> None:
    """Only the training gang (progress sink) gets a ServiceAccount token."""
    run = _runs()[1]
    mounted = {o["metadata"]["name"]: [p["automountServiceAccountToken"] for p in _pod_specs(o)]
               for o in every_pod_owner(run)}
    assert {k for k, v in mounted.items() if any(v)} == {"big-train"}


def test_gate_uses_the_runs_identity_and_region() -> None:
    raw = gpu_spec_dict()
    raw["storage"]["region"] = "eu-central-1"
    run = Run("big", "team-a", "uid-2", parse_spec(raw))
    gate = every_pod_owner(run)[-1]["spec"]["template"]["spec"]
    assert gate["serviceAccountName"] == "team-a-s3"
    env = {e["name"]: e.get("value") for e in gate["containers"][0]["env"]}
    assert env["AWS_DEFAULT_REGION"] == "eu-central-1"
