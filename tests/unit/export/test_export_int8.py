"""`int8: true`: one version under the model's own name, int8 weights, or QuantizationRejected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kiln_api import contract
from kiln_trainer.export import main as export_main
from kiln_trainer.export.quantize import SCALE_SUFFIX, quantize_state_dict
from kiln_trainer.serving.generate import SamplingParams, generate
from kiln_trainer.serving.int8 import Int8Embedding, Int8Linear
from kiln_trainer.serving.loader import load_version

CK = "runs/tiny/checkpoints"


def _export(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], **over: object) -> tuple[int, str]:
    cfg = {"checkpoints_uri": f"file://{root}/{CK}", "model_repository": f"file://{root}/models",
           "model_name": "tiny", "reference_prompts": ["the cat sees"], "reference_max_new_tokens": 6,
           "hf_export": False, "int8": True, **over}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(cfg))
    rc = export_main.main(str(path))
    out = capsys.readouterr()
    return rc, out.out + out.err


@pytest.mark.timeout(180)
def test_int8_version_is_published_under_the_model_name(fresh_tree, tmp_path, capsys):
    rc, out = _export(fresh_tree, tmp_path, capsys, max_ppl_increase=10.0)
    assert rc == 0, out
    assert sorted(p.name for p in (fresh_tree / "models").iterdir()) == ["tiny"]  # no second model name
    summary = next(json.loads(x) for x in out.splitlines() if x.startswith('{"exported"'))["exported"]
    assert (summary["model"], summary["version"], summary["variant"]) == ("tiny", 1, "int8")
    m = json.loads((fresh_tree / "models/tiny/1/manifest.json").read_text())
    assert m["variant"] == m["dtype"] == "int8" and m["int8"]["serving_mode"] == "int8"
    assert m["eval"]["export_ppl"] == pytest.approx(m["int8"]["ppl"])
    assert m["int8"]["ppl_increase"] == pytest.approx(m["int8"]["ppl"] / m["int8"]["ppl_full_precision"] - 1)
    # The file holds int8 matrices; the served model keeps them int8 and reproduces the references.
    from safetensors.torch import load_file

    stored = load_file(str(fresh_tree / "models/tiny/1/weights.safetensors"))
    assert stored["tok_emb.weight"].dtype == torch.int8 and "tok_emb.weight" + SCALE_SUFFIX in stored
    served = load_version(fresh_tree / "models/tiny/1")
    gpt = served.model.gpt
    assert isinstance(gpt.tok_emb, Int8Embedding) and isinstance(gpt.blocks[0].mlp.down, Int8Linear)
    ref = m["reference_outputs"][0]
    params = SamplingParams(max_new_tokens=ref["max_new_tokens"], stop_token_id=served.eos_id)
    assert generate(served.model, ref["prompt_ids"], params) == ref["token_ids"]


@pytest.mark.timeout(180)
def test_int8_over_the_bound_publishes_nothing_and_exits_rejected(fresh_tree, tmp_path, capsys, monkeypatch):
    def coarse(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A broken quantizer (scales 4x too large): its perplexity must be far over any sane bound."""
        q = quantize_state_dict(sd)
        return {k: (v * 4 if k.endswith(SCALE_SUFFIX) else v) for k, v in q.items()}

    termination = tmp_path / "termination-log"
    termination.write_text("")
    monkeypatch.setattr(export_main, "quantize_state_dict", coarse)
    monkeypatch.setattr(contract, "TERMINATION_LOG", str(termination))
    rc, out = _export(fresh_tree, tmp_path, capsys, max_ppl_increase=0.5)
    assert rc == contract.EXIT_QUANTIZATION_REJECTED and contract.is_permanent_exit(rc), out
    message = termination.read_text()
    assert message.startswith("QuantizationRejected: INT8 perplexity ") and "bound max_ppl_increase 50.00%" in message
    assert "over full precision" in message and "nothing was published" in message
    assert not (fresh_tree / "models").exists()
    # The same checkpoint with the real quantizer passes: the failure was the bound, not the run.
    monkeypatch.setattr(export_main, "quantize_state_dict", quantize_state_dict)
    rc, out = _export(fresh_tree, tmp_path, capsys, max_ppl_increase=0.5)
    assert rc == 0, out
