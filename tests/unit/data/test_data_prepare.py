"""End to end on a small corpus: outputs, reader, determinism across shards/workers, reuse, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kiln_api.data_config import DataSpecError
from kiln_trainer.data.prepare import load_config
from kiln_trainer.data.prepare import main as prepare
from kiln_trainer.data.shards import CorruptShard, open_dataset
from kiln_trainer.data.tokenizer import EOS_ID, load


def _dataset(cfg_path: Path) -> Path:
    from kiln_trainer.data.prepare import dataset_uri

    return Path(dataset_uri(load_config(cfg_path))[len("file://"):])


def _stream(ds_dir: Path) -> dict[str, np.ndarray]:
    ds = open_dataset(ds_dir)
    return {s: np.concatenate([np.asarray(t) for t in ds.tokens(s)]) for s in ("train", "val")}


@pytest.fixture(scope="module")
def single(write_config: Any, small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("single")
    cfg = write_config(tmp, small_corpus, tmp / "out", workers=1)
    assert prepare(str(cfg)) == 0
    return _dataset(cfg)


def test_outputs_match_the_contract(single: Path) -> None:
    m = json.loads((single / "manifest.json").read_text())
    assert m["format_version"] == 1 and m["dtype"] == "uint16" and m["data_hash"] == single.name
    assert [s["name"] for s in m["shards"]] == ["train-00000", "train-00001", "val-00000"]
    ds = open_dataset(single)
    sp = load(ds.tokenizer_path)
    for split in ("train", "val"):
        for toks, idx, entry in zip(ds.tokens(split), ds.documents(split), [s for s in m["shards"] if s["split"] == split], strict=True):
            assert len(toks) == entry["tokens"] == idx[-1] and len(idx) == entry["documents"] + 1
            ends = idx[1:] - 1
            assert (toks[ends] == EOS_ID).all()  # EOS closes every document
            assert (np.diff(idx) > 1).all()
            text = sp.decode(toks[idx[0]:idx[1] - 1].tolist())
            assert len(text) > 10
    rep = json.loads((single / "report.json").read_text())
    assert rep["counts"]["dedup"]["exact_dropped"] >= 1 and rep["counts"]["dedup"]["near_dropped"] >= 1
    assert rep["counts"]["tokens"]["train"] == m["totals"]["train"]["tokens"]
    assert set(rep["seconds"]) >= {"read_clean_filter", "dedup", "tokenizer", "encode_pack"}


def test_corrupt_shard_is_named(single: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / single.name
    shutil.copytree(single, copy)
    with open(copy / "shards" / "train-00001.bin", "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xff")
    with pytest.raises(CorruptShard, match="shard train-00001"):
        open_dataset(copy)
    assert open_dataset(copy, verify=False).num_tokens("train") > 0


def test_two_shards_and_merge_equal_single_process(write_config: Any, single: Path, small_corpus: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path, small_corpus, tmp_path / "out", workers=2)
    # the shards run as separate invocations, in reverse order, like independent pods would
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")  # as in pod 1 of an Indexed Job
    assert prepare(str(cfg), num_shards=2) == 0
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    with pytest.raises(DataSpecError, match="part-00000"):
        prepare(str(cfg), merge=True)
    assert prepare(str(cfg), shard_index=0, num_shards=2) == 0
    assert prepare(str(cfg), merge=True) == 0
    ds = _dataset(cfg)
    a, b = _stream(single), _stream(ds)
    assert all(np.array_equal(a[s], b[s]) for s in a)
    assert not [p for p in (ds / "parts").rglob("*") if p.is_file()]  # parts removed after the merge


def test_parallel_workers_equal_serial_and_reuse(write_config: Any, single: Path, small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, small_corpus, tmp_path / "out", workers=3)  # pools of 3 readers, 2 encoders
    assert prepare(str(cfg)) == 0
    a, b = _stream(single), _stream(_dataset(cfg))
    assert all(np.array_equal(a[s], b[s]) for s in a)
    before = (_dataset(cfg) / "manifest.json").read_bytes()
    assert prepare(str(cfg)) == 0
    assert "already prepared" in capsys.readouterr().err
    assert (_dataset(cfg) / "manifest.json").read_bytes() == before


def test_weights_sample_and_repeat(write_config: Any, small_corpus: Path, tmp_path: Path) -> None:
    srcs = [{"uri": str(small_corpus / "a_en.txt"), "format": "txt", "weight": w} for w in (0.5,)]
    cfg = write_config(tmp_path, small_corpus, tmp_path / "o1", sources=srcs, dedup={"near": False, "exact": False})
    prepare(str(cfg))
    rep = json.loads((_dataset(cfg) / "report.json").read_text())["counts"]
    read, out = rep["input"]["docs_read"], rep["sampling"]["sampled_out"]
    assert 0.3 * read < out < 0.7 * read
    srcs[0]["weight"] = 2.0
    cfg2 = write_config(tmp_path, small_corpus, tmp_path / "o2", sources=srcs, dedup={"near": False, "exact": False})
    prepare(str(cfg2))
    rep2 = json.loads((_dataset(cfg2) / "report.json").read_text())["counts"]
    assert sum(rep2["documents_by_domain"].values()) == 2 * rep2["filters"]["kept"]


# ---- bad input ------------------------------------------------------------------------------------


def test_no_sources(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("output: file:///tmp/x\ndata: {sources: []}\n")
    with pytest.raises(DataSpecError, match=r"^data\.sources:"):
        prepare(str(tmp_path / "c.yaml"))


def test_glob_matching_nothing(write_config: Any, small_corpus: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, small_corpus, tmp_path / "o", sources=[{"uri": str(tmp_path / "none*.txt"), "format": "txt"}])
    with pytest.raises(DataSpecError, match=r"^data\.sources\[0\]\.uri: .* matches no files"):
        prepare(str(cfg))


def test_binary_and_unreadable_files_are_counted_skips(write_config: Any, small_corpus: Path, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    for f in small_corpus.glob("*.txt"):
        (d / f.name).write_bytes(f.read_bytes())
    (d / "zz_image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (d / "zz_latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (d / "zz_broken.txt.gz").write_bytes(gzip.compress(b"hello world " * 50)[:20])
    cfg = write_config(tmp_path, small_corpus, tmp_path / "o", sources=[{"uri": str(d / "*.txt*"), "format": "txt"}])
    assert prepare(str(cfg)) == 0
    rep = json.loads((_dataset(cfg) / "report.json").read_text())
    assert rep["counts"]["input"]["files_skipped:binary"] == 2
    assert rep["counts"]["input"]["files_skipped:unreadable"] == 1
    assert any("zz_broken" in s for s in rep["skipped_files"])


def test_missing_jsonl_field(write_config: Any, small_corpus: Path, tmp_path: Path) -> None:
    f = tmp_path / "mixed.jsonl"
    rows = [json.dumps({"text": line}) for line in (small_corpus / "a_en.txt").read_text().split("\n\n")]
    f.write_text("\n".join(rows + ['{"body": "no text here"}', "not json"]) + "\n")
    cfg = write_config(tmp_path, small_corpus, tmp_path / "o", sources=[{"uri": str(f), "format": "jsonl"}])
    prepare(str(cfg))
    counts = json.loads((_dataset(cfg) / "report.json").read_text())["counts"]["input"]
    assert counts["records_skipped:missing_field:text"] == 1 and counts["records_skipped:bad_json"] == 1
    cfg = write_config(tmp_path, small_corpus, tmp_path / "o2", sources=[{"uri": str(f), "format": "jsonl", "text_field": "content"}])
    with pytest.raises(DataSpecError, match=r"^data\.sources\[0\]\.text_field: no record .* 'content'"):
        prepare(str(cfg))


def test_vocab_too_big(write_config: Any, small_corpus: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, small_corpus, tmp_path / "o", tokenizer={"vocab_size": 60000})
    with pytest.raises(DataSpecError, match=r"^data\.tokenizer\.vocab_size: 60000"):
        prepare(str(cfg))


def test_everything_filtered_is_an_error_not_an_empty_dataset(write_config: Any, small_corpus: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, small_corpus, tmp_path / "o", filters={"min_units": 100000})
    with pytest.raises(ValueError, match="no documents left"):
        prepare(str(cfg))
    assert not (_dataset(cfg) / "manifest.json").exists()


def test_cli_reports_config_errors_by_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kiln_api.contract import EXIT_BAD_CONFIG
    from kiln_trainer.cli import main

    (tmp_path / "c.yaml").write_text("output: file:///tmp/x\ndata: {sources: [{uri: /x, format: csv}]}\n")
    assert main(["prepare", "--config", str(tmp_path / "c.yaml")]) == EXIT_BAD_CONFIG
    assert "data.sources[0].format" in capsys.readouterr().err


def test_output_without_access_is_named(write_config: Any, small_corpus: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 error path: an access-denied answer (stubbed client) becomes an error naming `output`."""
    from botocore.stub import Stubber
    from kiln_trainer.data import prepare as prep
    from kiln_trainer.storage import S3Store

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    store = S3Store("locked-bucket", "root")
    stub = Stubber(store._client)
    stub.add_client_error("head_object", service_error_code="AccessDenied", http_status_code=403)
    stub.activate()
    monkeypatch.setattr(prep, "open_store", lambda uri: store)
    cfg = write_config(tmp_path, small_corpus, tmp_path / "o")
    with pytest.raises(DataSpecError, match=r"^output: cannot access .*access denied to s3://locked-bucket/"):
        prepare(str(cfg))


def test_parquet_zstd_relative_paths_and_date_window(tmp_path: Path, small_corpus: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    import zstandard

    texts = (small_corpus / "a_en.txt").read_text().split("\n\n")[:60]
    dates = [f"20{10 + i % 10}-06-01" for i in range(len(texts))]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"body": texts, "day": dates}), tmp_path / "in" / "docs.parquet")
    rows = "\n".join(json.dumps({"text": t}) for t in texts[:30])
    (tmp_path / "in" / "more.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(rows.encode()))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"output": f"file://{tmp_path}/out", "workers": 1, "data": {
        "sources": [{"uri": "in/*.parquet", "format": "parquet", "text_field": "body", "date_field": "day"},
                    {"uri": "in/*.jsonl.zst", "format": "jsonl"}],
        "filters": {"date_from": "2012-01-01", "date_to": "2015-12-31"},
        "dedup": {"exact": False, "near": False},
        "tokenizer": {"vocab_size": 500}, "packing": {"val_fraction": 0.0}}}))
    assert prepare(str(cfg)) == 0
    rep = json.loads((_dataset(cfg) / "report.json").read_text())["counts"]
    assert rep["input"]["docs_read"] == 90 and rep["input"]["files_read"] == 2
    assert rep["filters"]["date_window"] == 36  # years 2010, 2011, 2016-2019 of the parquet rows
    assert rep["filters"]["kept"] == 54
    bad = cfg.read_text().replace("text_field: body", "text_field: nope")
    cfg.write_text(bad.replace("/out", "/out2"))
    with pytest.raises(DataSpecError, match=r"^data\.sources\[0\]\.text_field: .* has no column 'nope'"):
        prepare(str(cfg))


def test_merge_rejects_parts_of_another_shard_count(write_config: Any, small_corpus: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, small_corpus, tmp_path / "out", workers=1)
    for i in range(3):
        assert prepare(str(cfg), shard_index=i, num_shards=3) == 0
    assert prepare(str(cfg), shard_index=0, num_shards=2) == 0  # part-00000 now says 2 shards
    with pytest.raises(DataSpecError, match="part-00000 was written by a run with 2 shards"):
        prepare(str(cfg), merge=True, num_shards=3)
    with pytest.raises(DataSpecError, match=r"^shard-index: must be in \[0, 2\)"):
        prepare(str(cfg), shard_index=2, num_shards=2)
