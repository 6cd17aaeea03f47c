"""Triton's repository API answers only the key holder (the operator); inference needs no key.

`kiln-trainer serve` runs as a serving pod would, with the per-target key in its environment (from the
Secret the operator creates); the real tritonserver then refuses load/unload over HTTP and gRPC without
the key's header, while the operator's client (`promote_pod`, which sends it) still swaps versions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
from kiln_api import contract as c
from kiln_api.triton_client import GenerateRequest, generate
from kiln_operator.serving.access import Access
from kiln_operator.serving.builders import ServingTarget
from kiln_operator.serving.promote import PromoteError, promote_pod, version_ready
from kiln_trainer.serving.tritonserver import free_port

# The same file:// repository (versions 1 and 2 of `llm`) the rollout's Triton test exports.
from test_rollout_triton import MODEL, PROMPT, repo  # noqa: F401
from tritonclient.utils import InferenceServerException
from waiting import wait_for

TARGET = ServingTarget(name=MODEL, namespace="team-a", model=MODEL, repository="unused", endpoint=None,
                       secret=None, image="unused", restrict_repository_api=True)
KEY = Access(operator_key="operator-secret").target_key(TARGET)


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: Any) -> Any:  # noqa: F811 - the imported fixture
    http, grpc, metrics = free_port(), free_port(), free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, c.ENV_TRITON_REPOSITORY_KEY: KEY,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiln_trainer.cli", "serve", "--repository", f"file://{repo}", "--model", MODEL,
         "--version", "1", "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    try:
        # The launcher itself loads version 1 through the restricted API: it must send the key.
        wait_for(lambda: proc.poll() is not None or version_ready(f"127.0.0.1:{http}", MODEL, 1), 180, "v1 ready")
        assert proc.poll() is None, log.read_text()[-3000:]
        yield f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _load(http: str, headers: dict[str, str]) -> tuple[int, str]:
    config = {"version_policy": {"specific": {"versions": [2]}}}
    req = urllib.request.Request(f"http://{http}/v2/repository/models/{MODEL}/load", method="POST",
                                 data=json.dumps({"parameters": {"config": json.dumps(config)}}).encode(),
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()


@pytest.mark.timeout(900)
def test_only_the_key_holder_drives_the_repository_api(server: tuple[str, str]) -> None:
    http, grpc = server
    # Without the key (or with a wrong one), a pod cannot load a version: HTTP and gRPC.
    for headers in ({}, {c.TRITON_KEY_HEADER: "guess"}):
        status, body = _load(http, headers)
        assert status == 403 and "restricted" in body, (status, body)
    client = grpcclient.InferenceServerClient(grpc)
    with pytest.raises(InferenceServerException, match="restricted"):
        client.unload_model(MODEL)
    with pytest.raises(PromoteError, match="refused the key"):
        promote_pod(http, MODEL, 2, key=None)
    assert version_ready(http, MODEL, 1) and not version_ready(http, MODEL, 2)

    # Inference needs no key.
    assert generate(grpc, MODEL, GenerateRequest(prompt=PROMPT, max_new_tokens=4)).token_ids

    # The operator's client, with the target's key, swaps the version.
    promote_pod(http, MODEL, 2, key=KEY)
    assert version_ready(http, MODEL, 2) and not version_ready(http, MODEL, 1)
    assert generate(grpc, MODEL, GenerateRequest(prompt=PROMPT, max_new_tokens=4)).token_ids
