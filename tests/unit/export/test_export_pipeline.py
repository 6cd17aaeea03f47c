import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from kiln_api.contract import EXIT_BAD_CONFIG
from kiln_trainer.export.main import main
from kiln_trainer.serving.generate import GenerationError, SamplingParams, generate
from kiln_trainer.serving.loader import LoadError, load_version
from kiln_trainer.serving.service import parse_request

CK = "runs/tiny/checkpoints"
STEP = f"{CK}/step-00000005"


def _export(root: Path, tmp_path: Path, capsys, **over) -> tuple[int, str]:
    cfg = {"checkpoints_uri": f"file://{root}/{CK}", "model_repository": f"file://{root}/models",
           "model_name": "tiny", "reference_prompts": ["the cat sees"], "reference_max_new_tokens": 6, **over}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(cfg))
    rc = main(str(path))
    out = capsys.readouterr()
    return rc, out.out + out.err


@pytest.mark.timeout(120)
def test_export_writes_versions_with_manifest_and_hf(fresh_tree, tmp_path, capsys):
    rc, out = _export(fresh_tree, tmp_path, capsys)
    assert rc == 0, out
    v1 = fresh_tree / "models/tiny/1"
    names = {p.name for p in v1.iterdir()}
    assert {"model.py", "weights.safetensors", "model_config.json", "tokenizer.model", "manifest.json", "hf"} <= names
    assert (fresh_tree / "models/tiny/config.pbtxt").read_text().count("decoupled: true") == 1
    m = json.loads((v1 / "manifest.json").read_text())
    assert m["run"] == "tiny" and m["checkpoint"]["step"] == 5 and m["data_hash"] == "fixture-tiny"
    assert m["variant"] == m["dtype"] == "float32" and "int8" not in json.dumps(m["eval"])
    assert next(json.loads(x) for x in out.splitlines() if x.startswith('{"exported"'))["exported"]["variant"] == "float32"
    # The stored reference is what in-process generation from the exported files gives.
    served = load_version(v1)
    ref = m["reference_outputs"][0]
    assert generate(served.model, ref["prompt_ids"], SamplingParams(max_new_tokens=6, stop_token_id=served.eos_id)) == ref["token_ids"]
    # A second export gets the next number and leaves version 1 byte-identical.
    before = (v1 / "manifest.json").read_bytes()
    rc, out = _export(fresh_tree, tmp_path, capsys)
    assert rc == 0, out
    assert (fresh_tree / "models/tiny/2/manifest.json").exists()
    assert (v1 / "manifest.json").read_bytes() == before
    # Asking for an existing number is refused.
    rc, out = _export(fresh_tree, tmp_path, capsys, version=2)
    assert rc == EXIT_BAD_CONFIG and "tiny/2 already exists" in out


def _rewrite(root: Path, rel: str, data: bytes) -> None:
    (root / STEP / rel).write_bytes(data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: _rewrite(r, "model_config.json", b'{"vocab_size": 1}'), "'model_config.json' is corrupt"),
        (lambda r: (r / STEP / "mp_rank_00_model_states.pt").unlink(), "is missing (partial checkpoint)"),
        (lambda r: (r / STEP / "COMMITTED").unlink(), "no commit marker"),
        (lambda r: (r / STEP / "manifest.json").unlink(), "no manifest.json"),
        (lambda r: (r / CK / "latest").unlink(), "no 'latest' pointer"),
    ],
)
def test_bad_checkpoints_are_refused_with_a_clear_error(fresh_tree, tmp_path, capsys, damage, message):
    damage(fresh_tree)
    rc, out = _export(fresh_tree, tmp_path, capsys)
    assert rc == EXIT_BAD_CONFIG and message in out
    assert not (fresh_tree / "models").exists()  # nothing half-published


def _edit_manifest(root: Path, edit) -> None:
    """Change the committed manifest and re-sign it in COMMITTED, as a trainer would have written it."""
    m = json.loads((root / STEP / "manifest.json").read_text())
    edit(m)
    body = json.dumps(m).encode()
    (root / STEP / "manifest.json").write_bytes(body)
    marker = json.loads((root / STEP / "COMMITTED").read_text())
    marker["manifest_sha256"] = hashlib.sha256(body).hexdigest()
    (root / STEP / "COMMITTED").write_text(json.dumps(marker))


def test_replaced_manifest_is_refused(fresh_tree, tmp_path, capsys):
    m = json.loads((fresh_tree / STEP / "manifest.json").read_text())
    m["step"] = 6
    (fresh_tree / STEP / "manifest.json").write_text(json.dumps(m))
    rc, out = _export(fresh_tree, tmp_path, capsys)
    assert rc == EXIT_BAD_CONFIG and "does not match the sha256 in COMMITTED" in out


def test_missing_tokenizer_is_named(fresh_tree, tmp_path, capsys):
    _edit_manifest(fresh_tree, lambda m: m["files"].pop("tokenizer.model"))
    (fresh_tree / STEP / "tokenizer.model").unlink()
    rc, out = _export(fresh_tree, tmp_path, capsys)
    assert rc == EXIT_BAD_CONFIG and "tokenizer_uri: neither" in out and "tokenizer.model" in out
    rc, out = _export(fresh_tree, tmp_path, capsys, tokenizer_uri=f"file://{fresh_tree}/nope/tokenizer.model")
    assert rc == EXIT_BAD_CONFIG and "tokenizer_uri" in out


def test_best_needs_val_loss(fresh_tree, tmp_path, capsys):
    _edit_manifest(fresh_tree, lambda m: m["metrics"].pop("val_loss"))
    rc, out = _export(fresh_tree, tmp_path, capsys, checkpoint="best")
    assert rc == EXIT_BAD_CONFIG and "'best' needs val_loss" in out


@pytest.fixture(scope="module")
def served(ckpt_tree, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("srv")
    shutil.copytree(ckpt_tree, root, dirs_exist_ok=True)
    cfg = tmp_path_factory.mktemp("cfg") / "e.json"
    cfg.write_text(json.dumps({"checkpoints_uri": f"file://{root}/{CK}", "model_repository": f"file://{root}/models",
                               "model_name": "m", "hf_export": False}))
    assert main(str(cfg)) == 0
    return load_version(root / "models/m/1")


def test_service_parses_and_rejects_requests(served):
    req = parse_request({"TEXT": np.array([[b"the cat"]], dtype=object), "MAX_NEW_TOKENS": np.array([[4]], np.int32),
                         "TEMPERATURE": np.array([[0.5]], np.float32), "SEED": np.array([[3]]), "STREAM": np.array([[True]])}, served)
    assert req.prompt_ids == served.encode("the cat") and req.stream and req.params.seed == 3
    assert req.params.max_new_tokens == 4 and req.params.temperature == 0.5
    assert req.params.no_repeat_ngram == 0  # off unless asked
    asked = parse_request({"INPUT_IDS": np.array([[1, 2]]), "NO_REPEAT_NGRAM": np.array([[3]], np.int32)}, served)
    assert asked.params.no_repeat_ngram == 3
    assert req.params.min_new_tokens == 0  # the EOS floor too
    floor = parse_request({"INPUT_IDS": np.array([[1, 2]]), "MIN_NEW_TOKENS": np.array([[4]], np.int32)}, served)
    assert floor.params.min_new_tokens == 4 and floor.params.stop_token_id == served.eos_id
    cases = [
        ({}, "give exactly one"),
        ({"TEXT": np.array([[b"x"]], dtype=object), "INPUT_IDS": np.array([[1]])}, "give exactly one"),
        ({"INPUT_IDS": np.array([[1, 2]]), "MAX_NEW_TOKENS": np.array([[0]])}, "MAX_NEW_TOKENS"),
        ({"INPUT_IDS": np.array([[1] * 60]), "MAX_NEW_TOKENS": np.array([[10]])}, "exceeds the model context"),
        ({"INPUT_IDS": np.array([[1, 2]]), "TOP_P": np.array([[1.5]])}, "TOP_P"),
        ({"INPUT_IDS": np.array([[1, 2]]), "NO_REPEAT_NGRAM": np.array([[1]], np.int32)}, "NO_REPEAT_NGRAM"),
        ({"INPUT_IDS": np.array([[1, 2]]), "MAX_NEW_TOKENS": np.array([[3]]), "MIN_NEW_TOKENS": np.array([[9]])},
         "MIN_NEW_TOKENS"),
    ]
    for inputs, msg in cases:
        with pytest.raises(GenerationError, match=msg):
            parse_request(inputs, served)


def test_loader_detects_a_corrupt_weights_copy(served, tmp_path):
    import shutil

    src = Path(served.manifest["checkpoint"]["uri"].removeprefix("file://")).parents[3] / "models/m/1"
    dst = tmp_path / "1"
    shutil.copytree(src, dst)
    data = bytearray((dst / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (dst / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(LoadError, match="sha256"):
        load_version(dst)
    (dst / "tokenizer.model").unlink()
    with pytest.raises(LoadError, match="tokenizer.model is missing"):
        load_version(dst)


class _FakeDataset:
    """Stands in for kiln_trainer.data.shards.Dataset: tokenizer, manifest and a `val` split."""

    def __init__(self, path: Path, val: list[int] | None) -> None:
        self.path, self.val = path, val
        self.manifest = {"data_hash": "d" * 16}

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.model"

    def tokens(self, split: str):
        if split != "val" or self.val is None:
            raise KeyError(f"split {split!r} not in dataset {self.path} (splits: train)")
        return [np.array(self.val[:40]), np.array(self.val[40:])]


def test_dataset_supplies_tokenizer_hash_and_val_tokens(fresh_tree, tmp_path, capsys, monkeypatch):
    import sentencepiece as spm
    from kiln_trainer.data import shards
    from kiln_trainer.export.fixture import corpus

    ds_dir = tmp_path / "ds"
    ds_dir.mkdir()
    (ds_dir / "tokenizer.model").write_bytes((fresh_tree / STEP / "tokenizer.model").read_bytes())
    val = spm.SentencePieceProcessor(model_file=str(ds_dir / "tokenizer.model")).encode(corpus(20, seed=5))
    seen = []
    monkeypatch.setattr(shards, "open_dataset", lambda uri, **kw: seen.append(uri) or _FakeDataset(ds_dir, val))
    _edit_manifest(fresh_tree, lambda m: m["files"].pop("tokenizer.model"))  # as in a real run's checkpoint
    rc, out = _export(fresh_tree, tmp_path, capsys, dataset_uri="s3://kiln/t/datasets/abc", eval_max_tokens=70)
    assert rc == 0, out
    m = json.loads((fresh_tree / "models/tiny/1/manifest.json").read_text())
    assert seen == ["s3://kiln/t/datasets/abc"]
    assert m["data_hash"] == "d" * 16 and m["eval_tokens"] == 70 and "val split" in m["eval_source"]
    # A dataset without a val split is named, with the way out.
    monkeypatch.setattr(shards, "open_dataset", lambda uri, **kw: _FakeDataset(ds_dir, None))
    rc, out = _export(fresh_tree, tmp_path, capsys, dataset_uri="s3://kiln/t/datasets/abc")
    assert rc == EXIT_BAD_CONFIG and "dataset_uri" in out and "eval_text_uri" in out


@pytest.mark.timeout(240)
def test_zero3_checkpoint_consolidates_to_the_trained_weights(tmp_path, capsys):
    """ZeRO-3 shards parameters too (no mp_rank_00 file): the merged weights must be the trained ones,
    so their loss on the training text is close to the loss the trainer last logged."""
    import math

    from kiln_trainer.export.fixture import corpus, make_checkpoint_tree
    from kiln_trainer.export.main import eval_ppl

    root = tmp_path / "z3"
    make_checkpoint_tree(root, run="tiny", step=5, zero_stage=3)
    assert not (root / STEP / "mp_rank_00_model_states.pt").exists()
    rc, out = _export(root, tmp_path, capsys)
    assert rc == 0, out
    served = load_version(root / "models/tiny/1")
    logged = json.loads((root / STEP / "manifest.json").read_text())["metrics"]["loss"]
    measured = math.log(eval_ppl(served, served.encode(corpus(60))))
    assert abs(measured - logged) < 0.3, (measured, logged)
    assert logged < math.log(96) - 0.5  # and training did move the weights away from uniform
