"""The exported repository served by the real tritonserver from the embedded cluster's S3.

One module-scoped server reads `s3://http://host:port/<bucket>/models`, holding model `tiny` with
two versions exported from two different checkpoints (INT8 versions: test_triton_int8.py). Every answer is compared
with in-process generation (`serving.generate`) over the same exported files.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kiln_api.triton_client import GenerateRequest, TritonRequestError, generate
from kiln_trainer.export.fixture import make_checkpoint_tree
from kiln_trainer.export.main import main as export_main
from kiln_trainer.serving.generate import SamplingParams
from kiln_trainer.serving.generate import generate as local_generate
from kiln_trainer.serving.loader import Served, load_version
from kiln_trainer.serving.tritonserver import TritonProcess
from kiln_trainer.storage import open_store

PROMPTS = ["the cat sees", "the small dog", "a blue river near"]


def _export(tmp: Path, ckpts: str, repo: str, **over: object) -> None:
    cfg = tmp / f"export-{uuid.uuid4().hex[:6]}.json"
    cfg.write_text(json.dumps({"checkpoints_uri": ckpts, "model_repository": repo, "model_name": "tiny",
                               "reference_prompts": PROMPTS[:1], **over}))
    assert export_main(str(cfg)) == 0


@pytest.fixture(scope="module")
def served(cluster, tmp_path_factory):  # type: ignore[no-untyped-def]
    """(TritonProcess, {version: Served}, None): two versions in S3, one running server."""
    s3 = cluster.s3
    env = {"AWS_ACCESS_KEY_ID": s3["access_key"], "AWS_SECRET_ACCESS_KEY": s3["secret_key"],
           "AWS_ENDPOINT_URL": s3["endpoint_url"], "AWS_DEFAULT_REGION": "us-east-1"}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    bucket = f"kiln-triton-{uuid.uuid4().hex[:10]}"
    cluster.s3_client().create_bucket(Bucket=bucket)
    tmp = tmp_path_factory.mktemp("triton")
    for run, steps in (("a", 20), ("b", 5)):
        make_checkpoint_tree(tmp / "ck", run=run, step=steps)
        for p in (tmp / "ck/runs" / run / "checkpoints").rglob("*"):
            if p.is_file():
                rel = p.relative_to(tmp / "ck").as_posix()
                open_store(f"s3://{bucket}").put_file(rel, p)
    repo = f"s3://{bucket}/models"
    _export(tmp, f"s3://{bucket}/runs/a/checkpoints", repo)
    _export(tmp, f"s3://{bucket}/runs/b/checkpoints", repo)
    local = tmp / "local"
    store = open_store(repo)
    for key in store.list():
        store.get_file(key, local / key)
    endpoint = s3["endpoint_url"]
    with TritonProcess(f"s3://{endpoint}/{bucket}/models", env=env, load_models=["tiny"]) as triton:
        yield triton, {1: load_version(local / "tiny/1"), 2: load_version(local / "tiny/2")}, None
    mp.undo()


def _local(s: Served, prompt: str, **kw: object) -> list[int]:
    return local_generate(s.model, s.encode(prompt), SamplingParams(stop_token_id=s.eos_id, **kw))  # type: ignore[arg-type]


@pytest.mark.timeout(600)
def test_greedy_is_token_identical_to_in_process(served):
    triton, versions, _ = served
    for prompt in PROMPTS:
        got = generate(triton.grpc_url, "tiny", GenerateRequest(prompt, max_new_tokens=12), version=1)
        assert got.token_ids == _local(versions[1], prompt, max_new_tokens=12)
        assert got.text == versions[1].decode(got.token_ids)


def test_decoding_rules_reach_the_server(served):
    # The n-gram rule and the EOS floor are inputs of the served model: its answers are in-process generation's.
    triton, versions, _ = served
    for prompt in PROMPTS:
        req = GenerateRequest(prompt, max_new_tokens=12, no_repeat_ngram=3, min_new_tokens=12)
        got = generate(triton.grpc_url, "tiny", req, version=1)
        assert got.token_ids == _local(versions[1], prompt, max_new_tokens=12, no_repeat_ngram=3, min_new_tokens=12)
        assert len(got.token_ids) == 12 and versions[1].eos_id not in got.token_ids


def test_reference_outputs_in_manifest_match_the_server(served):
    triton, versions, _ = served
    ref = versions[1].manifest["reference_outputs"][0]
    got = generate(triton.grpc_url, "tiny", GenerateRequest(ref["prompt"], max_new_tokens=ref["max_new_tokens"]), version=1)
    assert got.token_ids == ref["token_ids"]


def test_seeded_sampling_is_reproducible(served):
    triton, versions, _ = served
    req = GenerateRequest(PROMPTS[0], max_new_tokens=16, temperature=1.0, top_k=30, top_p=0.95, seed=1234)
    a = generate(triton.grpc_url, "tiny", req, version=1).token_ids
    b = generate(triton.grpc_url, "tiny", req, version=1).token_ids
    assert a == b == _local(versions[1], PROMPTS[0], max_new_tokens=16, temperature=1.0, top_k=30, top_p=0.95, seed=1234)
    other = GenerateRequest(PROMPTS[0], max_new_tokens=16, temperature=1.0, top_k=30, top_p=0.95, seed=99)
    assert generate(triton.grpc_url, "tiny", other, version=1).token_ids != a


def test_streaming_equals_non_streaming_and_http(served):
    triton, _, _ = served
    plain = generate(triton.grpc_url, "tiny", GenerateRequest(PROMPTS[1], max_new_tokens=10), version=2)
    streamed = generate(triton.grpc_url, "tiny", GenerateRequest(PROMPTS[1], max_new_tokens=10, stream=True), version=2)
    assert streamed.token_ids == plain.token_ids and streamed.text == plain.text
    body = json.dumps({"TEXT": PROMPTS[1], "MAX_NEW_TOKENS": 10}).encode()
    req = urllib.request.Request(f"http://{triton.http_url}/v2/models/tiny/versions/2/generate", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert json.loads(resp.read())["TOKEN_IDS"] == plain.token_ids


def test_two_versions_answer_independently(served):
    triton, versions, _ = served
    outs = {}
    for v in (1, 2):
        outs[v] = [generate(triton.grpc_url, "tiny", GenerateRequest(p, max_new_tokens=10), version=v).token_ids for p in PROMPTS]
        assert outs[v] == [_local(versions[v], p, max_new_tokens=10) for p in PROMPTS]
    assert outs[1] != outs[2]  # different checkpoints behind the two numbers


@pytest.mark.timeout(300)
def test_concurrent_requests_are_batched_and_correct(served):
    triton, versions, _ = served
    prompts = [PROMPTS[i % 3] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda p: generate(triton.grpc_url, "tiny", GenerateRequest(p, max_new_tokens=8), version=1).token_ids, prompts))
    assert got == [_local(versions[1], p, max_new_tokens=8) for p in prompts]


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (GenerateRequest("the cat " * 80, max_new_tokens=4), "exceeds the model context"),
        (GenerateRequest("the cat", max_new_tokens=0), "MAX_NEW_TOKENS"),
        (GenerateRequest("the cat", temperature=-1.0), "TEMPERATURE"),
        (GenerateRequest("the cat", max_new_tokens=4, min_new_tokens=5), "MIN_NEW_TOKENS"),
    ],
)
def test_bad_requests_get_errors_and_the_server_survives(served, req, message):
    triton, _, _ = served
    with pytest.raises(TritonRequestError, match=message):
        generate(triton.grpc_url, "tiny", req, version=1)
    assert generate(triton.grpc_url, "tiny", GenerateRequest("the cat", max_new_tokens=2), version=1).token_ids
    with urllib.request.urlopen(f"http://{triton.http_url}/v2/models/tiny/ready", timeout=5) as resp:
        assert resp.status == 200


def test_http_bad_request_is_a_400(served):
    triton, _, _ = served
    body = json.dumps({"TEXT": "the cat", "MAX_NEW_TOKENS": -3}).encode()
    req = urllib.request.Request(f"http://{triton.http_url}/v2/models/tiny/generate", data=body,
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400 and b"MAX_NEW_TOKENS" in err.value.read()
