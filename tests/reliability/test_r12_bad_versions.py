"""R12: bad model versions never answer a request; the old version keeps serving.

On the real nodes, with the real serving image (tritonserver) and the operator's own rollout code
(`rollout_tick`, called once a second as the RollingOut handler's timer does), version 1 is rolled out
to a target. Then, while clients keep sending requests through the target's Service, three bad
versions are rolled out in turn, each exported good and then spoiled in S3 the way versions go bad:

* never ready: weights that fail their checksum, so Triton never loads the version;
* wrong output: other weights (with a matching checksum), so it loads but answers unlike its reference;
* crash after load: it loads and reports ready, then its process dies on the first request.

Each must end in a FAIL decision with a reason within 2 minutes, with 0 answers from it and no failed
request; version 1 stays live. The figure: per case the reason and the time to it; answers by version.
The module's last test then takes v1's weights away and restarts the serving pod (issue 14 point 6).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any

import pytest
from kiln_operator.kube import Kube
from kiln_operator.serving.builders import ServingTarget
from kiln_operator.serving.execute import LIVE_VERSION, RolloutRequest, rollout_tick
from kiln_operator.serving.plan import Decision, Observed, Step
from kiln_trainer.export.fixture import make_checkpoint_tree
from kiln_trainer.export.main import main as export_main
from nodekit import TRAINER_IMAGE
from operatorkit import s3_endpoint_for_pods, s3_secret
from servedversions import VersionLoad, rewrite_version
from waiting import wait_for

MODEL = "llm"
PROMPT = "the cat sees"
REPORT_WITHIN_S = 120.0
CASES = (("never ready", "corrupt", "CanaryFailed"), ("wrong output", "wrong", "GateFailed"),
         ("crash after load", "crash", "GateFailed"))


def _export(tmp_path, repository: str, version: int, steps: int) -> None:
    """Version `version` of MODEL from a tiny checkpoint of `steps` steps (one tree per step count)."""
    ckpts = tmp_path / f"ck{steps}" / "runs" / f"r{steps}" / "checkpoints"
    if not ckpts.exists():
        ckpts = make_checkpoint_tree(tmp_path / f"ck{steps}", run=f"r{steps}", step=steps)
    cfg = tmp_path / f"export-{version}.json"
    cfg.write_text(json.dumps({"checkpoints_uri": f"file://{ckpts}", "model_repository": repository,
                               "model_name": MODEL, "version": version, "reference_prompts": [PROMPT],
                               "reference_max_new_tokens": 8, "hf_export": False}))
    assert export_main(str(cfg)) == 0


def _roll_out(kube: Kube, req: RolloutRequest, deadline_s: float) -> tuple[Decision, float]:
    """Tick the rollout until it is done or failed; returns the final decision and the seconds it took."""
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        decision = rollout_tick(kube, replace(req, elapsed_s=elapsed))
        if decision.step in (Step.DONE, Step.FAIL) or elapsed > deadline_s:
            return decision, elapsed
        time.sleep(1.0)  # the operator's reconcile interval; each tick is one observe → plan → act


@dataclass
class Served:
    """Version 1 live on a target of a fresh namespace, through the operator's rollout code."""

    cluster: Any
    kube: Kube
    base: RolloutRequest
    bucket: str
    namespace: str

    def grpc_url(self) -> str:
        from kubernetes import client

        svc = client.CoreV1Api(self.cluster.api).read_namespaced_service(MODEL, self.namespace)
        return f"{svc.spec.cluster_ip}:8001"

    def live_version(self) -> str | None:
        from kubernetes import client

        dep = client.AppsV1Api(self.cluster.api).read_namespaced_deployment(MODEL, self.namespace)
        return (dep.metadata.annotations or {}).get(LIVE_VERSION)


@pytest.fixture(scope="module")
def served(cluster, s3_module_bucket, tmp_path_factory):
    from kiln_operator.rollout import SERVING_IMAGE
    from kubernetes import client
    from nodekit import namespace

    tmp_path = tmp_path_factory.mktemp("r12")
    repository = f"s3://{s3_module_bucket}/models"
    env = {"AWS_ENDPOINT_URL": cluster.s3["endpoint_url"], "AWS_ACCESS_KEY_ID": cluster.s3["access_key"],
           "AWS_SECRET_ACCESS_KEY": cluster.s3["secret_key"], "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as mp:
        for var, value in env.items():
            mp.setenv(var, value)
        # v1 (good) from 30 steps; the candidates from another checkpoint (8 steps), so each answers differently.
        for version, steps in ((1, 30), *((v, 8) for v in range(2, 2 + len(CASES)))):
            _export(tmp_path, repository, version, steps)
    with namespace(client.CoreV1Api(cluster.api), "r12") as ns:
        s3_secret(cluster, ns)
        kube = Kube(cluster.api)
        target = ServingTarget(name=MODEL, namespace=ns, model=MODEL, repository=repository,
                               endpoint=s3_endpoint_for_pods(cluster), secret="kiln-s3", image=SERVING_IMAGE)
        base = RolloutRequest(target=target, run="good", version=1, prompts=[PROMPT], max_latency_ms=20000,
                              trainer_image=TRAINER_IMAGE, owner=None, elapsed_s=0.0)
        first, took = _roll_out(kube, base, 600)
        assert first.step is Step.DONE, first
        print(f"v1 live after {took:.0f}s")
        yield Served(cluster, kube, base, s3_module_bucket, ns)


# The first test also pays for the module's set-up: `up` (minutes when an image changed), 4 exports, v1.
@pytest.mark.timeout(1800)
def test_bad_versions_answer_nothing_and_the_old_version_keeps_serving(served, figure):
    s3 = served.cluster.s3_client()
    results = []
    with VersionLoad(served.grpc_url(), MODEL, clients=2, prompt=PROMPT) as load:
        wait_for(lambda: load.total() >= 5, 120, "answers from v1 through the Service")
        for version, (name, how, _reason) in enumerate(CASES, start=2):
            rewrite_version(s3, served.bucket, f"models/{MODEL}/{version}", how)
            req = replace(served.base, run=f"bad-{how}", version=version)
            decision, took = _roll_out(served.kube, req, REPORT_WITHIN_S + 60)
            results.append((name, decision, took))
            print(f"{name}: {decision.step.value} {decision.reason} after {took:.0f}s: {decision.message[:200]}")
        seen = load.total()
        wait_for(lambda: load.total() >= seen + 5, 120, "answers after the last bad version")

    answers = dict(sorted(load.by_version.items()))
    live = served.live_version()
    cases = "; ".join(f"{name}: {d.reason} in {took:.0f}s" for name, d, took in results)
    figure(f"R12 {len(CASES)} bad versions → {cases}; answers by version {answers}, "
           f"{len(load.failures)} failed requests; live stays v{live}")
    for (name, _how, reason), (_n, decision, took) in zip(CASES, results, strict=True):
        assert decision.step is Step.FAIL and decision.reason == reason, (name, decision)
        assert took <= REPORT_WITHIN_S, f"{name}: failure reported after {took:.0f}s (> {REPORT_WITHIN_S:.0f}s)"
    assert set(answers) == {1}, f"answers by a bad version: {answers}"
    assert load.failures == [], load.failures[:3]
    assert live == "1"


@pytest.mark.timeout(600)
def test_a_serving_pod_that_cannot_load_the_live_version_holds_then_fails_by_deadline(served, figure):
    """Issue 14 point 6: the live record alone never makes a rollout Succeeded. The serving pod
    restarts and cannot load v1 (its weights are gone from S3): the rollout of v1 waits with
    ServingNotReady naming the pod's state, and fails with it once the serving deadline has passed.
    (The clock is the rollout's `elapsed_s`; tests/unit/serving/test_rollout_readiness.py checks
    how rollout.py counts it.)"""
    from kubernetes import client

    core = client.CoreV1Api(served.cluster.api)
    served.cluster.s3_client().delete_object(Bucket=served.bucket, Key=f"models/{MODEL}/1/weights.safetensors")
    selector = "kiln.dev/role=serving,kiln.dev/serving-target=" + MODEL
    core.delete_collection_namespaced_pod(served.namespace, label_selector=selector)
    start = time.monotonic()

    def waiting() -> Decision | None:
        d = rollout_tick(served.kube, replace(served.base, elapsed_s=60.0))
        return d if d.step is Step.WAIT_SERVING and ("CrashLoopBackOff" in d.message or "Error" in d.message) else None

    held = wait_for(waiting, 240, "the rollout waiting on a serving pod that cannot load v1", interval=2)
    took = time.monotonic() - start
    failed = rollout_tick(served.kube, replace(served.base, elapsed_s=Observed.serving_deadline_s + 1))
    figure(f"serving pod cannot load v1 → {held.reason} after {took:.0f}s ({held.message[:120]}); "
           f"past the {Observed.serving_deadline_s:.0f}s deadline → {failed.step.value} {failed.reason}")
    assert held.reason == "ServingNotReady" and served.live_version() == "1"
    assert (failed.step, failed.reason) == (Step.FAIL, "ServingNotReady"), failed
