"""The CRD's run-name bound (kiln_api.childnames) against the names the real builders produce.

A run of exactly the longest admitted name, at the largest gang the CRD admits, gets every child built;
each name that becomes a Service, a hostname or a label value must fit a DNS label, and the longest one
must be exactly 63 characters (so the bound is tight, not merely safe). A builder that adds a longer
child name fails here until kiln_api.childnames learns its suffix (and the CRD is regenerated).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from kiln_api.childnames import DNS_LABEL_MAX, MAX_SERVED_VERSION, max_run_name_length
from kiln_api.trainingrun import TrainingSpec, parse_spec
from kiln_op_testlib import gpu_spec_dict
from kiln_operator.builders.common import Run
from kiln_operator.builders.export_job import build_export_job
from kiln_operator.builders.indexed_job import build_headless_service, build_indexed_job
from kiln_operator.builders.prepare_job import build_prepare_job
from kiln_operator.builders.pytorchjob import build_pytorchjob
from kiln_operator.builders.rbac import build_rbac
from kiln_operator.configmap import build_config_map
from kiln_operator.serving import builders as sb


def _largest_gang_run(name: str) -> Run:
    raw = copy.deepcopy(gpu_spec_dict())
    nodes = next(f for f in dataclasses.fields(TrainingSpec) if f.name == "nodes").metadata["kiln"].maximum
    raw["training"].update(nodes=int(nodes), globalBatchSize=int(nodes) * 8 * 2)
    raw["storage"] = {"uri": "s3://team-a/runs", "secretRef": {"name": "s3"}}
    return Run(name=name, namespace="team-a", uid="u", spec=parse_spec(raw))


def _pod_level_names(obj: dict[str, Any]) -> list[str]:
    """Names Kubernetes or Kubeflow derive from a child: replica pods/Services, Indexed Job hostnames."""
    name = obj["metadata"]["name"]
    spec = obj.get("spec") or {}
    if obj["kind"] == "PyTorchJob":
        return [f"{name}-{kind.lower()}-{int(r['replicas']) - 1}"
                for kind, r in spec["pytorchReplicaSpecs"].items()]
    if obj["kind"] == "Job" and spec.get("completionMode") == "Indexed":
        return [f"{name}-{int(spec['completions']) - 1}"]
    return []


def _all_names(run: Run) -> list[str]:
    objs = [*build_rbac(run), build_config_map(run), build_prepare_job(run), build_pytorchjob(run),
            build_headless_service(run), build_indexed_job(run), build_export_job(run)]
    target = sb.ServingTarget(name="chat", namespace=run.namespace, model="m", repository="s3://b/m",
                              endpoint=None, secret=None, image="kiln.local/serving")
    objs.append(sb.build_gate_job(target, run=run.name, version=MAX_SERVED_VERSION, canary_url="10.0.0.1:8001",
                                  prompts=["hi"], max_latency_ms=100, trainer_image="kiln.local/trainer"))
    names = [o["metadata"]["name"] for o in objs]
    names += [n for o in objs for n in _pod_level_names(o)]
    names += [v for o in objs for v in (o["metadata"].get("labels") or {}).values()]
    return names


def test_longest_admitted_name_carries_every_child() -> None:
    names = _all_names(_largest_gang_run("r" * max_run_name_length()))
    too_long = [n for n in names if len(n) > DNS_LABEL_MAX]
    assert not too_long, too_long
    assert max(len(n) for n in names) == DNS_LABEL_MAX, "the bound is looser than the builders need"


def test_one_character_more_would_not_fit() -> None:
    names = _all_names(_largest_gang_run("r" * (max_run_name_length() + 1)))
    assert any(len(n) > DNS_LABEL_MAX for n in names)
