"""R14: two namespaces with their own S3 identities (the dev cluster's versitygw: one user per
namespace owning one bucket) → 0 cross-namespace reads or writes in 100 tries, while each identity
keeps full use of its own bucket."""

from __future__ import annotations

import random
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from kiln_devcluster.s3server import Identity, create_identity

pytestmark = pytest.mark.timeout(300)
TRIES = 100


def _client(cluster: Any, ident: Identity) -> Any:
    return boto3.client("s3", endpoint_url=cluster.s3["endpoint_url"], aws_access_key_id=ident.access_key,
                        aws_secret_access_key=ident.secret_key, region_name="us-east-1")


def _attempt(s3: Any, bucket: str, op: str, key: str) -> bool:
    """True when the operation on someone else's bucket went through (a breach)."""
    calls = {
        "get": lambda: s3.get_object(Bucket=bucket, Key=key)["Body"].read(),
        "head": lambda: s3.head_object(Bucket=bucket, Key=key),
        "put": lambda: s3.put_object(Bucket=bucket, Key=f"intruder/{key}", Body=b"x"),
        "put-if-absent": lambda: s3.put_object(Bucket=bucket, Key=f"intruder/{key}", Body=b"x", IfNoneMatch="*"),
        "list": lambda: s3.list_objects_v2(Bucket=bucket),
        "delete": lambda: s3.delete_object(Bucket=bucket, Key=key),
        "copy-out": lambda: s3.copy_object(Bucket=bucket, Key="stolen", CopySource={"Bucket": bucket, "Key": key}),
    }
    try:
        calls[op]()
    except ClientError as e:
        assert e.response["Error"]["Code"] in ("AccessDenied", "NoSuchKey", "403"), e.response["Error"]
        return False
    return True


def test_namespaces_cannot_reach_each_others_bucket(cluster: Any, figure: Any) -> None:
    root = cluster.s3_client()
    a, b = (create_identity(cluster.s3["endpoint_url"], cluster.s3["access_key"], cluster.s3["secret_key"], ns)
            for ns in ("kiln-r14-a", "kiln-r14-b"))
    try:
        sa, sb = _client(cluster, a), _client(cluster, b)
        for s3, ident in ((sa, a), (sb, b)):
            for i in range(5):
                s3.put_object(Bucket=ident.bucket, Key=f"ckpt/{i}", Body=ident.bucket.encode())
        rng, breaches = random.Random(14), 0
        ops = ["get", "head", "put", "put-if-absent", "list", "delete", "copy-out"]
        for i in range(TRIES):
            s3, other = (sa, b) if i % 2 == 0 else (sb, a)
            breaches += _attempt(s3, other.bucket, rng.choice(ops), f"ckpt/{rng.randrange(5)}")
        # Each side still owns and uses its bucket, and nothing of the other side's got in or went away.
        intact = all(len(s3.list_objects_v2(Bucket=ident.bucket).get("Contents", [])) == 5
                     and s3.get_object(Bucket=ident.bucket, Key="ckpt/0")["Body"].read() == ident.bucket.encode()
                     for s3, ident in ((sa, a), (sb, b)))
        figure(f"R14 two namespaces' S3 identities: {breaches} cross-namespace reads/writes went through "
               f"in {TRIES} tries; own buckets intact: {intact}")
        assert breaches == 0 and intact
    finally:
        for ident in (a, b):
            for obj in root.list_objects_v2(Bucket=ident.bucket).get("Contents", []):
                root.delete_object(Bucket=ident.bucket, Key=obj["Key"])
            root.delete_bucket(Bucket=ident.bucket)
