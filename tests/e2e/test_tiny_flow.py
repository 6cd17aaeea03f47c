"""The whole flow on the embedded cluster, driven by the files in examples/.

1. examples/tiny.yaml: prepare → 2-pod DeepSpeed training → export → gated rollout → Succeeded,
   and `kiln generate` answers through the target's Service.
2. examples/tiny-second.yaml rolls a new version out to the same target while clients keep
   sending requests: no request fails.
3. examples/tiny-held.yaml holds before the canary; the test corrupts the exported weights, then
   releases the hold: the gate stage refuses the version and the previous one keeps answering.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml
from kilnflow import REPO, Load, condition, kiln, live_version, phase_of, run_object, service_grpc
from kubernetes import client
from nodekit import delete_namespace
from waiting import wait_for

NS = "kiln-e2e"
TARGET = "tiny-llm"
RUN_DEADLINE = 1200


def _apply(cluster, example: str) -> str:
    doc = yaml.safe_load((REPO / "examples" / example).read_text())
    out = kiln(cluster, "-n", NS, "submit", str(REPO / "examples" / example))
    assert out.returncode == 0, out.stderr
    return doc["metadata"]["name"]


def _wait_phase(cluster, name: str, phases: tuple[str, ...], timeout: float = RUN_DEADLINE) -> str:
    return wait_for(lambda: (p := phase_of(cluster, NS, name)) in phases and p, timeout, f"{name} in {phases}",
                    interval=2)


@pytest.fixture(scope="module")
def kiln_installed(cluster):
    helm = str(cluster.bin / "helm")
    chart = REPO / "charts" / "kiln"
    cluster.kubectl("create", "namespace", NS, check=False)
    # The operator watches only NS, so it never meets runs of other tests on the same cluster.
    out = subprocess.run([helm, "upgrade", "--install", "kiln-e2e", str(chart), "-n", NS,
                          "-f", str(chart / "ci" / "devcluster-values.yaml"), "--set", f"operator.watchNamespace={NS}",
                          "--wait", "--timeout", "5m", f"--kubeconfig={cluster.kubeconfig}"],
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout + out.stderr
    # A fresh start: no runs, serving target, checkpoints or model versions from an earlier session.
    cluster.kubectl("-n", NS, "delete", "trainingruns", "--all", "--wait=true", timeout=180)
    cluster.kubectl("-n", NS, "delete", "deployment,service,configmap", "-l", f"kiln.dev/serving-target={TARGET}",
                    "--ignore-not-found")
    s3 = cluster.s3_client()
    if "kiln" not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket="kiln")
    # Only this namespace's part of the bucket: `make demo` keeps its model versions under demo/default/,
    # and a serving target of the demo still points at them (wiping them made its pods crash-loop).
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="kiln", Prefix=f"demo/{NS}/"):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket="kiln", Key=obj["Key"])
    secret = client.V1Secret(metadata=client.V1ObjectMeta(name="kiln-s3"), string_data={
        "AWS_ACCESS_KEY_ID": cluster.s3["access_key"], "AWS_SECRET_ACCESS_KEY": cluster.s3["secret_key"]})
    core = client.CoreV1Api(cluster.api)
    if core.list_namespaced_secret(NS, field_selector="metadata.name=kiln-s3").items:
        core.delete_namespaced_secret("kiln-s3", NS)
    core.create_namespaced_secret(NS, secret)
    yield cluster
    # Nothing stays behind for the tests after this module: the runs go while their operator still
    # runs (it removes its finalizers), then the release, then the namespace with the serving target.
    cluster.kubectl("-n", NS, "delete", "trainingruns", "--all", "--wait=true", timeout=180)
    subprocess.run([helm, "uninstall", "kiln-e2e", "-n", NS, "--wait", f"--kubeconfig={cluster.kubeconfig}"],
                   capture_output=True, text=True, timeout=300, check=True)
    delete_namespace(core, NS)


@pytest.fixture(scope="module")
def tiny(kiln_installed):
    cluster = kiln_installed
    name = _apply(cluster, "tiny.yaml")
    phase = _wait_phase(cluster, name, ("Succeeded", "Failed"))
    run = run_object(cluster, NS, name)
    assert phase == "Succeeded", f"tiny ended {phase}: {run.get('status')}"
    return name


@pytest.mark.timeout(1500)
def test_tiny_run_trains_exports_and_serves(kiln_installed, tiny, tmp_path):
    cluster = kiln_installed
    run = run_object(cluster, NS, tiny)
    assert condition(run, "Ready").get("status") == "True"
    assert condition(run, "RolledOut").get("status") == "True"
    progress = run["status"].get("progress") or {}
    assert progress.get("lastCommittedStep"), progress
    version, live_run = live_version(cluster, NS, TARGET)
    assert live_run == tiny and version is not None
    assert str(run["status"]["artifacts"]["modelVersion"]).endswith(f"/{TARGET}/{version}")
    out = kiln(cluster, "-n", NS, "generate", TARGET, "Once upon a time", "--max-new-tokens", "12")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), "kiln generate returned no text"
    png = tmp_path / "loss.png"
    out = kiln(cluster, "-n", NS, "plot", tiny, "-o", str(png))
    assert out.returncode == 0, out.stderr
    assert png.stat().st_size > 10_000
    status = kiln(cluster, "-n", NS, "status", tiny)
    assert "phase: Succeeded" in status.stdout and "curve" in status.stdout


@pytest.mark.timeout(1500)
def test_second_run_swaps_version_without_failed_requests(kiln_installed, tiny):
    cluster = kiln_installed
    before, _ = live_version(cluster, NS, TARGET)
    with Load(service_grpc(cluster, NS, TARGET), TARGET, clients=3) as load:
        name = _apply(cluster, "tiny-second.yaml")
        phase = _wait_phase(cluster, name, ("Succeeded", "Failed"))
        wait_for(lambda: load.ok > 20, 120, "some requests after the swap")
    assert phase == "Succeeded", run_object(cluster, NS, name).get("status")
    after, live_run = live_version(cluster, NS, TARGET)
    assert live_run == name and after is not None and before is not None and after > before
    assert load.failures == [], f"{len(load.failures)} failed requests during the swap: {load.failures[:3]}"
    assert load.ok > 20


@pytest.mark.timeout(1500)
def test_broken_export_fails_the_gate_and_old_version_keeps_serving(kiln_installed, tiny):
    cluster = kiln_installed
    before, before_run = live_version(cluster, NS, TARGET)
    name = _apply(cluster, "tiny-held.yaml")
    _wait_phase(cluster, name, ("RollingOut",))
    uri = wait_for(lambda: (run_object(cluster, NS, name)["status"].get("artifacts") or {}).get("modelVersion", "")
                   .rstrip("/").rsplit("/", 1)[-1].isdigit() and run_object(cluster, NS, name)["status"]
                   ["artifacts"]["modelVersion"], 120, "the exported version in status")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    s3 = cluster.s3_client()
    weights = f"{prefix}/weights.safetensors"
    data = bytearray(s3.get_object(Bucket=bucket, Key=weights)["Body"].read())
    data[len(data) // 2: len(data) // 2 + 64] = b"\x7f" * 64  # bit rot in the middle of the tensors
    s3.put_object(Bucket=bucket, Key=weights, Body=bytes(data))
    cluster.kubectl("-n", NS, "annotate", "trainingrun", name, "kiln.dev/hold-rollout-")
    assert _wait_phase(cluster, name, ("Succeeded", "Failed"), timeout=600) == "Failed"
    rolled = condition(run_object(cluster, NS, name), "RolledOut")
    assert rolled.get("status") == "False" and rolled.get("reason") == "RolloutFailed", rolled
    assert live_version(cluster, NS, TARGET) == (before, before_run)
    out = kiln(cluster, "-n", NS, "generate", TARGET, "Once upon a time", "--max-new-tokens", "8")
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
