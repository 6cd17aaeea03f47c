"""The dev cluster's S3 server: versitygw with its posix backend and its internal IAM.

Why versitygw (Apache-2.0, built from its Go module by build.sh): it checks SigV4 signatures per
identity, keeps objects as plain files under the cluster's state directory (so they survive
`down`/`up`; only `down --purge` removes them), honours conditional writes (``If-None-Match: *``,
which the checkpoint commit marker relies on) and gives each identity only the buckets it owns.

Identities: the root account (``S3_ACCESS_KEY``) administers; `create_identity` adds a user with
role ``user`` through versitygw's admin API (same port, SigV4-signed by root) and hands it one
bucket. A ``user`` cannot create buckets and is denied every bucket it does not own.
"""

from __future__ import annotations

import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

REGION = "us-east-1"
BINARY = "versitygw"


@dataclass(frozen=True)
class Layout:
    """Where the server keeps its state below the cluster's S3 folder (``StatePaths.s3_data``)."""

    root: Path

    @property
    def data(self) -> Path:
        """One folder per bucket, one file per object (metadata in extended attributes)."""
        return self.root / "posix"

    @property
    def iam(self) -> Path:
        """users.json of the internal IAM (the identities `create_identity` made)."""
        return self.root / "iam"

    def ensure(self) -> None:
        for d in (self.data, self.iam):
            d.mkdir(parents=True, exist_ok=True)


def argv(binary: Path, layout: Layout, port: int, access: str, secret: str) -> list[str]:
    """The server's command line: root credentials, internal IAM, posix backend on `layout.data`."""
    return [
        str(binary), "--access", access, "--secret", secret, "--region", REGION,
        "--port", f":{port}", "--iam-dir", str(layout.iam), "--quiet",
        "posix", str(layout.data),
    ]


def serving(endpoint: str) -> bool:
    """True once the server answers HTTP: an unsigned request is refused (403), which proves both
    that it listens and that it checks credentials."""
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=2) as resp:
            return bool(resp.status < 500)
    except urllib.error.HTTPError as e:
        return e.code in (400, 403)
    except (urllib.error.URLError, OSError):
        return False


@dataclass(frozen=True)
class Identity:
    """An S3 user and the one bucket it owns."""

    access_key: str
    secret_key: str
    bucket: str


class Admin:
    """versitygw's admin API (PATCH /create-user, /change-bucket-owner), signed as the root account."""

    def __init__(self, endpoint: str, access: str, secret: str) -> None:
        self.endpoint, self.access, self.secret = endpoint.rstrip("/"), access, secret

    def _call(self, path: str, query: dict[str, str], body: bytes = b"") -> None:
        from botocore.auth import S3SigV4Auth  # botocore comes with boto3 (the venv's S3 client)
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        url = f"{self.endpoint}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        req = AWSRequest(method="PATCH", url=url, data=body)
        S3SigV4Auth(Credentials(self.access, self.secret), "s3", REGION).add_auth(req)
        raw = urllib.request.Request(url, data=body, method="PATCH", headers=dict(req.headers.items()))
        try:
            with urllib.request.urlopen(raw, timeout=10) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"S3 admin {path} {query}: HTTP {e.code}: {e.read().decode(errors='replace')}") from e

    def create_user(self, access: str, secret: str, role: str = "user") -> None:
        body = (f"<Account><Access>{escape(access)}</Access><Secret>{escape(secret)}</Secret>"
                f"<Role>{escape(role)}</Role></Account>").encode()
        self._call("/create-user", {}, body)

    def change_bucket_owner(self, bucket: str, owner: str) -> None:
        self._call("/change-bucket-owner", {"bucket": bucket, "owner": owner})


def create_identity(endpoint: str, root_access: str, root_secret: str, name: str) -> Identity:
    """A new user `name-<random>` owning a new bucket `name-<random>` (created by root, then handed
    over): what a namespace of the dev cluster gets as its own S3 account."""
    import boto3

    suffix = secrets.token_hex(4)
    ident = Identity(f"{name}-{suffix}", secrets.token_urlsafe(24), f"{name}-{suffix}")
    admin = Admin(endpoint, root_access, root_secret)
    admin.create_user(ident.access_key, ident.secret_key)
    root = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=root_access,
                        aws_secret_access_key=root_secret, region_name=REGION)
    root.create_bucket(Bucket=ident.bucket)
    admin.change_bucket_owner(ident.bucket, ident.access_key)
    return ident
