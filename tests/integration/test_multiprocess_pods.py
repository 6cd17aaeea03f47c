"""Several trainer processes per pod on the dev cluster: 2 pods × 2 ranks (gloo) from the operator's
real builders and compiled configs, against a 4-rank single-pod run; and a killed pod restarting the
gang through the operator, which resumes from the newest committed checkpoint.

Only the Kubernetes API, pod logs and S3 objects are read, so the tests hold on any node kind.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kiln_api.compiler import RunIdentity, compile_run
from kiln_api.s3layout import RunLayout
from kiln_api.trainingrun import parse_spec
from kiln_operator.builders.common import Run
from kiln_operator.builders.indexed_job import build_headless_service, build_indexed_job
from kiln_operator.builders.prepare_job import build_prepare_job
from kiln_operator.builders.pytorchjob import build_pytorchjob
from kiln_operator.builders.rbac import build_rbac
from kiln_operator.configmap import build_config_map
from kubernetes import client, utils
from nodekit import TRAINER_IMAGE, pod_log
from operatorkit import create_run, events, get_run, operator, run_namespace, tiny_run
from waiting import wait_for

pytestmark = pytest.mark.timeout(1500)
STEPS = 30  # the tiny preset logs every 10 steps: a curve of 3 points
POD = {"cpu": "1", "memory": "3Gi"}  # two pods fit a 2-core node; the ranks of a pod share its core


@pytest.fixture(scope="module")
def bucket(s3_module_bucket: str) -> str:
    return s3_module_bucket


@pytest.fixture(scope="module")
def ns(cluster: Any, bucket: str) -> Iterator[str]:
    with run_namespace(cluster, "mpp") as name:
        yield name


def _body(cluster: Any, bucket: str, name: str, **training: Any) -> dict[str, Any]:
    training.setdefault("optimizer", {"lr": 0.003, "warmupSteps": 2})  # the example's warmup outlasts 10 steps
    body = tiny_run(cluster, bucket, name, microBatchSize=2, globalBatchSize=8, resources=POD, **training)
    body["spec"]["image"] = TRAINER_IMAGE
    return body


def _run(body: dict[str, Any], ns: str) -> Run:
    return Run(name=body["metadata"]["name"], namespace=ns, uid="", spec=parse_spec(body["spec"]))


def _create(cluster: Any, ns: str, objs: list[dict[str, Any]]) -> None:
    """Children as the operator makes them, minus the owner: no TrainingRun exists for the garbage
    collector to find (the namespace goes at the end)."""
    for obj in objs:
        obj = copy.deepcopy(obj)
        obj["metadata"].pop("ownerReferences", None)
        if obj["kind"] == "PyTorchJob":
            client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
                "kubeflow.org", "v1", ns, "pytorchjobs", obj)
        else:
            utils.create_from_dict(cluster.api, obj, namespace=ns)


def _logs(cluster: Any, ns: str, run: str, tail: int | None = None) -> str:
    core = client.CoreV1Api(cluster.api)
    pods = core.list_namespaced_pod(ns, label_selector=f"kiln.dev/run={run}").items
    return "\n".join(f"--- {p.metadata.name}\n{pod_log(core, ns, p.metadata.name)[-(tail or 0):]}" for p in pods)


def _finished(cluster: Any, ns: str, obj: dict[str, Any]) -> str | None:
    name = obj["metadata"]["name"]
    if obj["kind"] == "PyTorchJob":
        got = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
            "kubeflow.org", "v1", ns, "pytorchjobs", name)
        conds = {c["type"] for c in (got.get("status") or {}).get("conditions") or [] if c["status"] == "True"}
    else:
        st = client.BatchV1Api(cluster.api).read_namespaced_job_status(name, ns).status
        conds = {c.type for c in st.conditions or [] if c.status == "True"}
    return next((c for c in ("Succeeded", "Complete", "Failed") if c in conds), None)


def _wait_done(cluster: Any, ns: str, obj: dict[str, Any], timeout: float) -> None:
    state = wait_for(lambda: _finished(cluster, ns, obj), timeout, f"{obj['kind']} {obj['metadata']['name']}")
    assert state != "Failed", _logs(cluster, ns, obj["metadata"]["labels"]["kiln.dev/run"], tail=3000)


def _s3_text(cluster: Any, bucket: str, uri: str) -> str:
    key = uri.removeprefix(f"s3://{bucket}/")
    return str(cluster.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read().decode())


def _layout(body: dict[str, Any], ns: str) -> RunLayout:
    return RunLayout.of(body["spec"]["storage"]["uri"], ns, body["metadata"]["name"])


def _losses(cluster: Any, bucket: str, body: dict[str, Any], ns: str) -> dict[int, float]:
    text = _s3_text(cluster, bucket, f"{_layout(body, ns).root}/runs/{body['metadata']['name']}/metrics/metrics.jsonl")
    return {r["step"]: r["loss"] for r in map(json.loads, text.splitlines()) if "loss" in r}


@pytest.fixture(scope="module")
def dataset(cluster: Any, bucket: str, ns: str) -> str:
    """The tiny example's dataset, prepared once by the builders' prepare Job (every run here shares it)."""
    body = _body(cluster, bucket, "data", maxSteps=STEPS)
    run = _run(body, ns)
    job = build_prepare_job(run)
    _create(cluster, ns, [*build_rbac(run), build_config_map(run), job])
    _wait_done(cluster, ns, job, 600)
    return compile_run(run.spec, RunIdentity(run.name, ns)).dataset_uri


def _has_pytorchjob(cluster: Any) -> bool:
    try:
        client.ApiextensionsV1Api(cluster.api).read_custom_resource_definition("pytorchjobs.kubeflow.org")
        return True
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise


def _train(cluster: Any, bucket: str, ns: str, name: str, launcher: str, **training: Any) -> dict[int, float]:
    """One gang from the builders, run to the end; its per-step losses."""
    body = _body(cluster, bucket, name, maxSteps=STEPS, checkpoint={"intervalSteps": STEPS, "keep": 2}, **training)
    run = _run(body, ns)
    gang = [build_pytorchjob(run)] if launcher == "PyTorchJob" else [build_headless_service(run), build_indexed_job(run)]
    _create(cluster, ns, [*build_rbac(run), build_config_map(run), *gang])
    nodes, nproc = training["nodes"], training["processesPerNode"]
    launches = [f"torchrun --nnodes={nodes} --nproc-per-node={nproc} --node-rank={r}" for r in range(nodes)]
    # Read while the pods live: a finished PyTorchJob deletes its pods (cleanPodPolicy All).
    wait_for(lambda: all(line in _logs(cluster, ns, name) for line in launches), 600,
             f"every pod of {name} to start torchrun for its node rank", interval=2)
    _wait_done(cluster, ns, gang[-1], 900)
    manifest = json.loads(_s3_text(cluster, bucket, f"{_layout(body, ns).checkpoint(STEPS)}/manifest.json"))
    assert manifest["world_size"] == nodes * nproc
    losses = _losses(cluster, bucket, body, ns)
    assert sorted(losses) == [10, 20, 30], losses
    return losses


@pytest.fixture(scope="module")
def reference(cluster: Any, bucket: str, ns: str, dataset: str) -> dict[int, float]:
    """4 ranks in one pod: the curve the 2 × 2 gangs must reproduce (same sequences per step)."""
    return _train(cluster, bucket, ns, "ref", "IndexedJob", nodes=1, processesPerNode=4, zero={"stage": 2})


@pytest.mark.parametrize("stage", [2, 3])
def test_two_pods_of_two_ranks_match_four_ranks_in_one_pod(cluster: Any, bucket: str, ns: str,
                                                           reference: dict[int, float], stage: int) -> None:
    # Both launchers: the PyTorchJob where Kubeflow is installed (ZeRO-2), the Indexed Job (ZeRO-3).
    launcher = "PyTorchJob" if stage == 2 and _has_pytorchjob(cluster) else "IndexedJob"
    losses = _train(cluster, bucket, ns, f"z{stage}", launcher, nodes=2, processesPerNode=2, zero={"stage": stage})
    assert losses == pytest.approx(reference, abs=2e-3 if stage == 2 else 5e-3), (losses, reference)
    assert losses[STEPS] < losses[10] - 0.3  # and it learns


def _committed(cluster: Any, bucket: str, layout: RunLayout) -> list[int]:
    prefix = layout.checkpoints().removeprefix(f"s3://{bucket}/") + "/"
    keys = cluster.s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(int(k["Key"].split("/")[-2].removeprefix("step-")) for k in keys if k["Key"].endswith("/COMMITTED"))


def test_killed_pod_restarts_the_gang_which_resumes_from_the_last_commit(cluster: Any, bucket: str, ns: str,
                                                                          dataset: str) -> None:
    core = client.CoreV1Api(cluster.api)
    body = _body(cluster, bucket, "kill", nodes=2, processesPerNode=2, zero={"stage": 2}, maxSteps=100000,
                 checkpoint={"intervalSteps": 5, "keep": 2}, maxRestarts=2)
    layout, train_pods = _layout(body, ns), "kiln.dev/run=kill,kiln.dev/stage=train"
    with operator(cluster, ns):
        create_run(cluster, ns, body)
        first = wait_for(lambda: _committed(cluster, bucket, layout), 600, "a first committed checkpoint")[-1]
        victim = core.list_namespaced_pod(ns, label_selector=train_pods).items[0]
        core.delete_namespaced_pod(victim.metadata.name, ns, grace_period_seconds=0)  # no emergency checkpoint
        wait_for(lambda: (get_run(cluster, ns, "kill")["status"].get("restarts") or {}).get("failure") == 1, 300,
                 "the operator to count one gang restart")

        def resumed_step() -> int | None:
            for p in core.list_namespaced_pod(ns, label_selector=train_pods).items:
                # A PyTorchJob's new pods reuse the old names: tell them apart by uid.
                if p.metadata.uid != victim.metadata.uid and p.metadata.deletion_timestamp is None:
                    found = re.search(r"resumed from \S*step-(\d+)", pod_log(core, ns, p.metadata.name))
                    if found:
                        return int(found.group(1))
            return None

        resumed = wait_for(resumed_step, 600, "the new gang's resume line")
        # A new pod starts an empty local metrics file, so the uploaded file holds the new gang's records.
        records = wait_for(lambda: _records(cluster, bucket, layout), 600, "metrics uploaded by the new gang")
        restarted = events(cluster, ns, "kill")
    assert resumed >= first, (resumed, first)
    cfg = compile_run(parse_spec(body["spec"]), RunIdentity("kill", ns)).train
    every, per_step = cfg.monitor.log_every, cfg.batch.global_batch_size * cfg.batch.seq_len
    # The first logged step after the resume, with the token count carried over: nothing replayed or skipped.
    assert records[0]["step"] == resumed + every - resumed % every, (resumed, records[0])
    assert [r["tokens"] for r in records] == [r["step"] * per_step for r in records]
    assert any(e.startswith("GangRestart") for e in restarted)


def _records(cluster: Any, bucket: str, layout: RunLayout) -> list[dict[str, Any]]:
    try:
        text = _s3_text(cluster, bucket, f"{layout.root}/runs/kill/metrics/metrics.jsonl")
    except ClientError as e:
        if e.response["Error"]["Code"] == "NoSuchKey":  # not uploaded yet
            return []
        raise
    return [r for r in map(json.loads, text.splitlines()) if "loss" in r]
