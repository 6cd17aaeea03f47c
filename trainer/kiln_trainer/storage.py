"""One storage layer for datasets, checkpoints, metrics and model repositories.

`open_store("s3://bucket/prefix")` or `open_store("file:///abs/dir")` returns a `Store` whose keys
are relative to that root. S3 connection settings come from the environment as the AWS SDK reads
them (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``),
so credentials are never part of a config file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kiln_api.s3layout import StorageURI


class StoreError(RuntimeError):
    """Base class for storage failures; messages name the URI involved."""


class NotFound(StoreError):
    """The key does not exist."""


class AlreadyExists(StoreError):
    """A conditional write found the key already present."""


class Store(Protocol):
    """Keys are '/'-separated paths below the store's root."""

    root: str

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def put_file(self, key: str, path: str | Path) -> None: ...
    def get_file(self, key: str, path: str | Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def uri(self, key: str) -> str: ...


def open_store(uri: str, *, max_concurrency: int = 8) -> Store:
    """A store rooted at `uri` (s3:// or file://)."""
    parsed = StorageURI.parse(uri, field="storage uri")
    if parsed.scheme == "file":
        return LocalStore(Path(parsed.prefix))
    return S3Store(parsed.bucket, parsed.prefix, max_concurrency=max_concurrency)


@dataclass
class LocalStore:
    """A directory on a local or mounted filesystem; writes are atomic (temp file + rename)."""

    base: Path

    @property
    def root(self) -> str:
        return f"file://{self.base}"

    def _path(self, key: str) -> Path:
        clean = key.strip("/")
        if ".." in clean.split("/"):
            raise StoreError(f"key {key!r} escapes the store root {self.root}")
        return self.base / clean

    def uri(self, key: str) -> str:
        return f"file://{self._path(key)}"

    @contextlib.contextmanager
    def _temp_beside(self, target: Path) -> Iterator[Path]:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        os.close(fd)
        try:
            yield Path(tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        target = self._path(key)
        with self._temp_beside(target) as tmp:
            tmp.write_bytes(data)
            if if_absent:
                # link() fails if the target exists: the local equivalent of If-None-Match: *.
                try:
                    os.link(tmp, target)
                except FileExistsError as e:
                    raise AlreadyExists(f"{self.uri(key)} already exists") from e
            else:
                os.replace(tmp, target)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as e:
            raise NotFound(f"{self.uri(key)} does not exist") from e

    def put_file(self, key: str, path: str | Path) -> None:
        target = self._path(key)
        with self._temp_beside(target) as tmp:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)

    def get_file(self, key: str, path: str | Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise NotFound(f"{self.uri(key)} does not exist")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        start = self._path(prefix) if prefix else self.base
        if start.is_file():
            return [prefix.strip("/")]
        if not start.is_dir():
            return []
        out = [
            p.relative_to(self.base).as_posix()
            for p in start.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        ]
        return sorted(out)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()


class S3Store:
    """An S3 bucket prefix through boto3; large files go up as parallel multipart uploads."""

    def __init__(self, bucket: str, prefix: str, *, max_concurrency: int = 8) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = boto3.client(
            "s3",
            config=Config(
                retries={"max_attempts": 5, "mode": "adaptive"},
                max_pool_connections=max(10, max_concurrency * 2),
                s3={"addressing_style": "path"},
                # No CRC32 trailer on uploads: every checkpoint file's sha256 is in its manifest
                # already, and the trailer makes botocore stream each part through aws-chunked
                # encoding in Python (measured in bench/bench_checkpoint.py).
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self._transfer = TransferConfig(
            multipart_threshold=16 * 1024 * 1024,
            multipart_chunksize=16 * 1024 * 1024,
            max_concurrency=max_concurrency,
            use_threads=True,
        )

    @property
    def root(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        clean = key.strip("/")
        return f"{self.prefix}/{clean}" if self.prefix else clean

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _translate(self, err: Exception, key: str) -> StoreError:
        from botocore.exceptions import ClientError

        if isinstance(err, ClientError):
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(f"{self.uri(key)} does not exist")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return AlreadyExists(f"{self.uri(key)} already exists")
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return StoreError(f"access denied to {self.uri(key)}: check the credentials ({code})")
            if code == "NoSuchBucket":
                return StoreError(f"bucket {self.bucket!r} does not exist ({self.uri(key)})")
        return StoreError(f"{self.uri(key)}: {err}")

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        except Exception as e:  # noqa: BLE001 - translated into our error types
            raise self._translate(e, key) from e

    def get_bytes(self, key: str) -> bytes:
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return bytes(body.read())
        except Exception as e:  # noqa: BLE001
            raise self._translate(e, key) from e

    def put_file(self, key: str, path: str | Path) -> None:
        try:
            self._client.upload_file(str(path), self.bucket, self._key(key), Config=self._transfer)
        except Exception as e:  # noqa: BLE001
            raise self._translate(e, key) from e

    def get_file(self, key: str, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client.download_file(self.bucket, self._key(key), str(path), Config=self._transfer)
        except Exception as e:  # noqa: BLE001
            raise self._translate(e, key) from e

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as e:  # noqa: BLE001
            err = self._translate(e, key)
            if isinstance(err, NotFound):
                return False
            raise err from e

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix) if prefix else (self.prefix + "/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        out: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                out.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except Exception as e:  # noqa: BLE001
            raise self._translate(e, prefix) from e
        return sorted(out)

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:  # noqa: BLE001
            raise self._translate(e, key) from e
