"""The dev cluster's S3 server (versitygw): credentials checked, conditional writes honoured, each
identity confined to its own bucket, objects kept as files under the cluster's state directory."""

from __future__ import annotations

import uuid

import boto3
import pytest
from botocore.exceptions import ClientError
from kiln_trainer.storage import AlreadyExists, open_store

pytestmark = pytest.mark.timeout(120)


def _client(cluster, access: str, secret: str):  # noqa: ANN001, ANN202
    return boto3.client("s3", endpoint_url=cluster.s3["endpoint_url"], aws_access_key_id=access,
                        aws_secret_access_key=secret, region_name="us-east-1")


def _code(call) -> str:  # noqa: ANN001
    with pytest.raises(ClientError) as err:
        call()
    return str(err.value.response["Error"]["Code"])


def test_wrong_or_unknown_credentials_are_refused(cluster, s3_bucket):
    wrong = _client(cluster, cluster.s3["access_key"], "not-the-secret")
    assert _code(lambda: wrong.get_object(Bucket=s3_bucket, Key="x")) == "SignatureDoesNotMatch"
    unknown = _client(cluster, "nobody", "whatever-secret")
    assert _code(lambda: unknown.list_buckets()) in ("InvalidAccessKeyId", "AccessDenied")


def test_if_none_match_star_writes_once(cluster, s3_bucket, monkeypatch):
    s3 = cluster.s3_client()
    s3.put_object(Bucket=s3_bucket, Key="COMMITTED", Body=b"first", IfNoneMatch="*")
    assert _code(lambda: s3.put_object(Bucket=s3_bucket, Key="COMMITTED", Body=b"second",
                                       IfNoneMatch="*")) == "PreconditionFailed"
    assert s3.get_object(Bucket=s3_bucket, Key="COMMITTED")["Body"].read() == b"first"
    # The trainer's store (what the commit marker goes through) maps the refusal to AlreadyExists.
    for var, value in (("AWS_ENDPOINT_URL", cluster.s3["endpoint_url"]), ("AWS_ACCESS_KEY_ID", cluster.s3["access_key"]),
                       ("AWS_SECRET_ACCESS_KEY", cluster.s3["secret_key"]), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(var, value)
    store = open_store(f"s3://{s3_bucket}/x")
    store.put_bytes("marker", b"1", if_absent=True)
    with pytest.raises(AlreadyExists):
        store.put_bytes("marker", b"2", if_absent=True)


def test_an_identity_reaches_only_its_own_bucket(cluster, s3_identity, s3_bucket):
    mine = _client(cluster, s3_identity.access_key, s3_identity.secret_key)
    mine.put_object(Bucket=s3_identity.bucket, Key="a", Body=b"mine")
    assert mine.get_object(Bucket=s3_identity.bucket, Key="a")["Body"].read() == b"mine"
    cluster.s3_client().put_object(Bucket=s3_bucket, Key="other", Body=b"root's")
    assert _code(lambda: mine.get_object(Bucket=s3_bucket, Key="other")) == "AccessDenied"
    assert _code(lambda: mine.put_object(Bucket=s3_bucket, Key="x", Body=b"x")) == "AccessDenied"
    assert _code(lambda: mine.list_objects_v2(Bucket=s3_bucket)) == "AccessDenied"
    assert _code(lambda: mine.create_bucket(Bucket=f"kiln-x-{uuid.uuid4().hex[:8]}")) == "AccessDenied"


def test_objects_are_files_in_the_state_directory(cluster, s3_bucket):
    """What makes them survive `make cluster-down`/`up`: `down` keeps the state dir (only --purge
    removes it), and the server stores each object as one file there."""
    cluster.s3_client().put_object(Bucket=s3_bucket, Key="dir/obj.txt", Body=b"on disk")
    assert (cluster.state_dir / "minio" / "posix" / s3_bucket / "dir" / "obj.txt").read_bytes() == b"on disk"
