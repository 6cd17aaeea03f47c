"""Reading one object of a run's storage (s3:// or file://) with the caller's own credentials."""

from __future__ import annotations

from pathlib import Path

from kiln_api.s3layout import StorageURI, StorageURIError


class StorageError(RuntimeError):
    """An object that cannot be read; the message says why (missing, denied, unreachable)."""


def read_bytes(uri: str, endpoint: str | None = None) -> bytes:
    """The object's bytes. `endpoint` is the S3 endpoint URL (None: the AWS default or $AWS_ENDPOINT_URL)."""
    try:
        where = StorageURI.parse(uri, field="uri")
    except StorageURIError as e:
        raise StorageError(str(e)) from e
    if where.scheme == "file":
        try:
            return Path(where.prefix).read_bytes()
        except OSError as e:
            raise StorageError(f"{uri}: {e.strerror or e}") from e
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        body = boto3.client("s3", endpoint_url=endpoint).get_object(Bucket=where.bucket, Key=where.prefix)["Body"]
        return bytes(body.read())
    except ClientError as e:
        raise StorageError(f"{uri}: {e.response.get('Error', {}).get('Code', 'error')}") from e
    except BotoCoreError as e:
        raise StorageError(f"{uri}: {e}") from e
