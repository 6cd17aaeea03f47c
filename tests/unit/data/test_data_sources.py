"""Streaming reads: binary detection, late bad bytes, odd line separators, truncated compressed files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from kiln_api.data_config import SourceSpec
from kiln_trainer.data.parts import _init, process_file
from kiln_trainer.data.sources import InputFile, SkipFile, iter_lines, read_docs


def test_lines_stream_across_blocks_and_keep_unicode_separators(tmp_path: Path) -> None:
    rows = [json.dumps({"text": f"record {i} with a\u2028line separator 中文"}, ensure_ascii=False) for i in range(20000)]
    f = tmp_path / "big.jsonl"
    f.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")  # > 1 MiB, CRLF line ends
    assert f.stat().st_size > 1 << 20
    counts: dict[str, int] = {}
    docs = list(read_docs(InputFile(0, str(f), 0), SourceSpec(uri=str(f)), counts))
    assert len(docs) == 20000 and counts == {}
    assert docs[-1].text == "record 19999 with a\u2028line separator 中文"


def test_binary_is_decided_on_the_head_later_bad_bytes_become_replacement_chars(tmp_path: Path) -> None:
    f = tmp_path / "late.txt"
    f.write_bytes(b"good text line\n" * 10000 + b"caf\xe9\n")
    lines = list(iter_lines(f, str(f)))
    assert lines[-1] == "caf\ufffd" and len(lines) == 10001
    g = tmp_path / "early.txt"
    g.write_bytes(b"caf\xe9 " + b"x" * 100)
    with pytest.raises(SkipFile, match="not UTF-8") as err:
        list(iter_lines(g, str(g)))
    assert err.value.reason == "binary"


def test_truncated_gzip_skips_the_whole_file_with_consistent_counts(tmp_path: Path) -> None:
    from kiln_api.data_config import DataSpec

    body = "\n\n".join(f"Paragraph number {i} tells a short story about a river and a bridge." for i in range(20000))
    packed = gzip.compress(body.encode(), mtime=0)
    f = tmp_path / "cut.txt.gz"
    f.write_bytes(packed[: len(packed) // 2])  # breaks well after the first 64 KiB
    spec = DataSpec.from_dict({"sources": [{"uri": str(f), "format": "txt"}]})
    _init(spec)
    docs, rep = process_file(InputFile(0, str(f), 0))
    assert docs == []
    assert rep.counts == {"input": {"files_skipped:unreadable": 1}}
    assert "cut.txt.gz" in rep.extra["skipped_files"][0]
