"""An INT8 version served by the real tritonserver under the model's one name, weights kept INT8.

Model `tiny` gets version 1 (float32) and version 2 (int8) exported from the same checkpoint into
a local repository (the S3 path is covered by test_triton_serving.py). The server's unversioned
requests go to the newest version, the INT8 one: its answers must be the in-process INT8 model's,
and each loaded version reports in the server log which variant it is and what dtype its resident
weights have.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from kiln_api.triton_client import GenerateRequest, generate
from kiln_trainer.export.fixture import make_checkpoint_tree
from kiln_trainer.export.main import main as export_main
from kiln_trainer.serving.generate import SamplingParams
from kiln_trainer.serving.generate import generate as local_generate
from kiln_trainer.serving.int8 import Int8Embedding, Int8Linear
from kiln_trainer.serving.loader import load_version
from kiln_trainer.serving.tritonserver import TritonProcess

PROMPTS = ["the cat sees", "a blue river near"]
RESIDENT = re.compile(r"\[kiln\] tiny/(\d+): (\w+) version loaded, resident weights (.*)")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("int8")
    make_checkpoint_tree(root, run="a", step=20)
    for int8 in (False, True):
        cfg = root / f"export-{int8}.json"
        cfg.write_text(json.dumps({"checkpoints_uri": f"file://{root}/runs/a/checkpoints",
                                   "model_repository": f"file://{root}/models", "model_name": "tiny",
                                   "reference_prompts": PROMPTS[:1], "hf_export": False,
                                   "int8": int8, "max_ppl_increase": 10.0}))
        assert export_main(str(cfg)) == 0
    return root / "models"


def _mib(text: str, dtype: str) -> float:
    found = re.search(rf"{dtype} ([0-9.]+) MiB", text)
    return float(found.group(1)) if found else 0.0


@pytest.mark.timeout(900)
def test_int8_version_answers_under_the_model_name_with_int8_weights(repo: Path) -> None:
    assert sorted(p.name for p in repo.iterdir()) == ["tiny"]
    assert json.loads((repo / "tiny/2/manifest.json").read_text())["variant"] == "int8"
    q8, fp = load_version(repo / "tiny/2"), load_version(repo / "tiny/1")
    assert isinstance(q8.model.gpt.tok_emb, Int8Embedding) and isinstance(q8.model.gpt.lm_head, Int8Linear)
    with TritonProcess(str(repo), load_models=["tiny"]) as triton:
        for prompt in PROMPTS:
            want = local_generate(q8.model, q8.encode(prompt), SamplingParams(max_new_tokens=10, stop_token_id=q8.eos_id))
            assert generate(triton.grpc_url, "tiny", GenerateRequest(prompt, max_new_tokens=10)).token_ids == want
            want_fp = local_generate(fp.model, fp.encode(prompt), SamplingParams(max_new_tokens=10, stop_token_id=fp.eos_id))
            assert generate(triton.grpc_url, "tiny", GenerateRequest(prompt, max_new_tokens=10), version=1).token_ids == want_fp
        ref = q8.manifest["reference_outputs"][0]  # what the rollout gate will compare against
        got = generate(triton.grpc_url, "tiny", GenerateRequest(ref["prompt"], max_new_tokens=ref["max_new_tokens"]),
                       version=2)
        assert got.token_ids == ref["token_ids"]
        lines = {int(m.group(1)): (m.group(2), m.group(3)) for m in RESIDENT.finditer(triton.log_text())}
    assert lines[1][0] == "float32" and lines[2][0] == "int8", lines
    assert _mib(lines[1][1], "int8") == 0.0 and _mib(lines[1][1], "float32") > 0
    # INT8 resident: the int8 bytes are most of version 2's weights, and far below version 1's float32.
    assert _mib(lines[2][1], "int8") > 2 * _mib(lines[2][1], "float32"), lines[2]
    assert _mib(lines[2][1], "int8") < 0.4 * _mib(lines[1][1], "float32"), lines
