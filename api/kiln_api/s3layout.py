"""Where kiln keeps things in object storage.

One storage URI per TrainingRun (``spec.storage.uri``), e.g. ``s3://kiln/team-a``. Each namespace
gets its own root below it (``<uri>/<namespace>``), so runs of the same name in two namespaces never
share checkpoints, datasets or model versions. Everything a run produces lives under that root at
fixed, documented keys, so the operator, the trainer and the CLI agree without talking to each other:

    <root>/datasets/<data-hash>/manifest.json       prepared, content-addressed datasets
    <root>/datasets/<data-hash>/shards/...
    <root>/runs/<run>/checkpoints/step-00000100/    one committed checkpoint per folder
    <root>/runs/<run>/checkpoints/latest            pointer: the newest committed step folder
    <root>/runs/<run>/metrics/metrics.jsonl         the trainer's metric records
    <root>/runs/<run>/progress.json                 the compact progress record
    <root>/models/<model>/<version>/                the Triton model repository
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class StorageURIError(ValueError):
    """A storage URI that kiln cannot use; the message names the field it came from."""


@dataclass(frozen=True)
class StorageURI:
    """A parsed ``s3://bucket/prefix`` or ``file:///abs/path`` URI (prefix without slashes at ends)."""

    scheme: str
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str, field: str = "storage.uri") -> StorageURI:
        if uri.startswith("s3://"):
            rest = uri[len("s3://") :]
            bucket, _, prefix = rest.partition("/")
            if not _BUCKET.match(bucket):
                raise StorageURIError(
                    f"{field}: {uri!r} has no valid bucket name (3-63 lowercase letters, digits, '.', '-')"
                )
            return cls("s3", bucket, prefix.strip("/"))
        if uri.startswith("file://"):
            path = uri[len("file://") :]
            if not path.startswith("/"):
                raise StorageURIError(f"{field}: {uri!r} must be an absolute path (file:///...)")
            return cls("file", "", path.rstrip("/"))
        raise StorageURIError(f"{field}: {uri!r} must start with s3:// or file://")

    def join(self, *parts: str) -> str:
        """The URI of a key below this one."""
        tail = "/".join(p.strip("/") for p in parts if p)
        if self.scheme == "file":
            return f"file://{self.prefix}/{tail}" if tail else f"file://{self.prefix}"
        base = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{base}/{tail}" if tail else base

    def __str__(self) -> str:
        return self.join()


def step_folder(step: int) -> str:
    """Checkpoint folder name; zero-padded so lexical order is step order."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return f"step-{step:08d}"


@dataclass(frozen=True)
class RunLayout:
    """The keys of one run below the storage root."""

    root: StorageURI
    run: str

    @classmethod
    def of(cls, storage_uri: str, namespace: str, run: str) -> RunLayout:
        """The layout of TrainingRun `namespace/run` whose spec.storage.uri is `storage_uri`."""
        base = StorageURI.parse(storage_uri, field="spec.storage.uri")
        return cls(StorageURI.parse(base.join(namespace)), run)

    def dataset(self, data_hash: str) -> str:
        return self.root.join("datasets", data_hash)

    def checkpoints(self) -> str:
        return self.root.join("runs", self.run, "checkpoints")

    def checkpoint(self, step: int) -> str:
        return self.root.join("runs", self.run, "checkpoints", step_folder(step))

    def latest_pointer(self) -> str:
        return self.root.join("runs", self.run, "checkpoints", "latest")

    def metrics(self) -> str:
        return self.root.join("runs", self.run, "metrics", "metrics.jsonl")

    def progress(self) -> str:
        return self.root.join("runs", self.run, "progress.json")

    def model_repository(self) -> str:
        return self.root.join("models")
