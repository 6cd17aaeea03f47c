"""Serving-target builders against golden YAML (regenerate with KILN_UPDATE_GOLDEN=1)."""

import os
from pathlib import Path

import pytest
import yaml
from kiln_operator.serving.builders import (
    ServingTarget,
    build_canary_deployment,
    build_gate_job,
    build_live_configmap,
    build_service,
    build_serving_deployment,
    selector,
)
from kiln_operator.serving.promote import with_version

GOLDEN = Path(__file__).parent / "golden"
TARGET = ServingTarget(
    name="tiny-llm", namespace="team-a", model="tiny-llm", repository="s3://kiln/demo/models",
    endpoint="http://minio.kiln-system.svc:9000", secret="kiln-s3",
    image="ghcr.io/kiln-dev/kiln-serving:0.1.0", replicas=2,
)
BUILT = {
    "configmap": build_live_configmap(TARGET, 3, "tiny"),
    "deployment": build_serving_deployment(TARGET),
    "service": build_service(TARGET),
    "canary": build_canary_deployment(TARGET, 4, "tiny-2"),
    "gate-job": build_gate_job(
        TARGET, run="tiny-2", version=4, canary_url="10.88.0.7:8001", prompts=["Hello", "你好"],
        max_latency_ms=3000, trainer_image="ghcr.io/kiln-dev/kiln-trainer:0.1.0",
    ),
}


@pytest.mark.parametrize("name", sorted(BUILT))
def test_matches_golden(name):
    path = GOLDEN / f"{name}.yaml"
    text = yaml.safe_dump(BUILT[name], sort_keys=True, allow_unicode=True)
    if os.environ.get("KILN_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from {path}; rerun with KILN_UPDATE_GOLDEN=1 if intended"


def test_service_never_selects_the_canary():
    svc = BUILT["service"]["spec"]["selector"]
    canary_labels = BUILT["canary"]["spec"]["template"]["metadata"]["labels"]
    assert not all(canary_labels.get(k) == v for k, v in svc.items())
    serving_labels = BUILT["deployment"]["spec"]["template"]["metadata"]["labels"]
    assert all(serving_labels.get(k) == v for k, v in svc.items())
    assert selector(TARGET, "serving") == svc


def test_rolling_update_never_drops_capacity():
    strategy = BUILT["deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_credentials_only_by_secret_reference():
    text = yaml.safe_dump(BUILT)
    assert "secretKeyRef" in text
    for env in BUILT["deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]:
        if env["name"].startswith("AWS_SECRET") or env["name"] == "AWS_ACCESS_KEY_ID":
            assert "value" not in env


def test_with_version_pins_one_and_copies():
    cfg = {"name": "m", "version_policy": {"latest": {"num_versions": 1}}}
    out = with_version(cfg, 5)
    assert out["version_policy"] == {"specific": {"versions": [5]}}
    assert cfg["version_policy"] == {"latest": {"num_versions": 1}}
