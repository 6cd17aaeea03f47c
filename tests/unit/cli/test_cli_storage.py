"""The CLI's one storage reader: file:// and s3:// objects, and errors that say what went wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln_operator.cli.storage import StorageError, read_bytes


def test_file_objects(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_bytes(b'{"counts": {}}')
    assert read_bytes(f"file://{tmp_path}/report.json") == b'{"counts": {}}'
    with pytest.raises(StorageError, match="No such file"):
        read_bytes(f"file://{tmp_path}/missing.json")
    with pytest.raises(StorageError, match="must start with s3:// or file://"):
        read_bytes("http://example.org/x")


def test_s3_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    moto = pytest.importorskip("moto")
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto.mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="kiln")
        s3.put_object(Bucket="kiln", Key="team-a/datasets/abc/samples.jsonl", Body=b'{"text": "\xe4\xbd\xa0"}\n')
        assert read_bytes("s3://kiln/team-a/datasets/abc/samples.jsonl") == b'{"text": "\xe4\xbd\xa0"}\n'
        with pytest.raises(StorageError, match="NoSuchKey"):
            read_bytes("s3://kiln/team-a/datasets/abc/report.json")
