"""`kiln data report|sample` on a dataset the real prepare step wrote to local storage (file://)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dirtycorpus import prepare_dirty
from kiln_operator.cli import commands
from kiln_operator.cli import main as kiln


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_dirty(tmp_path_factory.mktemp("cli"))


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = kiln(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_report_shows_every_stage(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rep = json.loads((dataset / "report.json").read_text())
    rc, out, _ = _run(["data", "report", f"file://{dataset}"], capsys)
    assert rc == 0
    c = rep["counts"]
    assert f"read                  {c['input']['docs_read']:>10,}" in out
    assert f"in the dataset        {c['dedup']['kept']:>10,}" in out
    for step in ("terminal", "roff", "wiki", "markdown", "html", "cjk_lines"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(step + " "))
        assert f"{c['clean_docs'][step]:,}" in line and f"{c['clean_chars_removed'][step]:,}" in line
    cov = rep["tokenizer_coverage"]
    assert f"{cov['cjk_chars']:,} CJK characters, {cov['cjk_distinct']:,} distinct" in out
    assert f"{100 * cov['cjk_single_piece_share']:.2f}% of occurrences" in out
    assert f"{100 * cov['byte_fallback_token_share']:.2f}% of all tokens" in out
    assert f"newlines, one byte piece each, apart: {100 * cov['newline_token_share']:.2f}%" in out
    dirty = next(ln for ln in out.splitlines() if ln.strip().startswith("dirty "))
    assert f"{c['tokens_by_domain']['dirty']:,}" in dirty and "100.00%" in dirty


def test_report_json_is_the_file(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(["data", "report", "--json", f"file://{dataset}"], capsys)
    assert rc == 0 and json.loads(out) == json.loads((dataset / "report.json").read_text())


def test_sample_prints_clean_text_from_the_shards(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = [json.loads(line) for line in (dataset / "samples.jsonl").read_text().splitlines()]
    rc, out, _ = _run(["data", "sample", f"file://{dataset}", "-n", "3"], capsys)
    assert rc == 0
    assert out.count("── train-") == 3
    for s in samples[:3]:
        assert f"── {s['shard']} document {s['document']} ({s['tokens']} tokens)" in out
        assert s["text"] in out
    assert "\x1b" not in out and "[33m" not in out and ".TP" not in out and "\\fB" not in out
    rc, _, err = _run(["data", "sample", f"file://{dataset}", "-n", "1000"], capsys)
    assert rc == 0 and f"prepare stored {len(samples)} samples" in err


def test_a_run_name_reads_the_dataset_of_its_status(dataset: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    runs: dict[str, dict[str, Any]] = {
        "ready": {"spec": {"storage": {"uri": "file:///x"}},
                  "status": {"phase": "Training", "artifacts": {"dataset": f"file://{dataset}"}}},
        "early": {"spec": {"storage": {"uri": "file:///x"}}, "status": {"phase": "Preparing"}},
    }
    # the API server is the integration tests' part; here the run object is what it would return
    monkeypatch.setattr(commands, "_get_run", lambda args, name: runs[name])
    rc, out, _ = _run(["data", "sample", "ready", "-n", "1"], capsys)
    assert rc == 0 and out.count("── train-") == 1
    rc, _, err = _run(["data", "report", "early"], capsys)
    assert rc == 2 and "has no prepared dataset yet (phase Preparing)" in err


def test_bad_input_is_named(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(["data", "sample", f"file://{dataset}", "-n", "0"], capsys)
    assert rc == 2 and "-n: must be at least 1" in err
    rc, _, err = _run(["data", "report", f"file://{tmp_path}/nothing"], capsys)
    assert rc == 2 and "cannot read the dataset's report.json" in err and "No such file" in err
