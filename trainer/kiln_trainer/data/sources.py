"""Finding input files (local, file://, s3://, builtin://tinycorpus, with globs) and reading documents.

Files are listed once, sorted, and numbered: the number is part of every document's key, so the
order of documents never depends on how the work was split between processes.

Missing jsonl fields are a *counted skip* (web dumps carry the odd metadata-only record), except when
no record of a file has the field: that is a typo in the config, so it is an error naming
``text_field``. Unreadable files (permissions, bad gzip) and binary files are counted skips.
"""

from __future__ import annotations

import fnmatch
import glob
import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kiln_api.data_config import DataSpecError, SourceSpec

BUILTIN = "builtin://tinycorpus/"


class SkipFile(Exception):
    """A file that is counted and skipped; `reason` is the report key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class InputFile:
    """One file to read; `index` is its place in the global sorted listing."""

    index: int
    uri: str
    source_index: int


@dataclass(frozen=True)
class RawDoc:
    """A document as read, before cleaning; `record` numbers it within its file."""

    record: int
    text: str
    date: str = ""


def _has_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _local_files(pattern: str) -> list[str]:
    if _has_glob(pattern):
        found = glob.glob(pattern, recursive=True)
    elif os.path.isdir(pattern):
        found = glob.glob(os.path.join(pattern, "**", "*"), recursive=True)
    else:
        found = [pattern] if os.path.exists(pattern) else []
    return sorted(p for p in found if os.path.isfile(p))


def _s3_files(uri: str, field: str) -> list[str]:
    from kiln_trainer.storage import StoreError, open_store

    bucket, _, key_pattern = uri[len("s3://"):].partition("/")
    cut = min((key_pattern.find(c) for c in "*?[" if c in key_pattern), default=-1)
    prefix = key_pattern if cut < 0 else key_pattern[:cut]
    store = open_store(f"s3://{bucket}")
    try:
        keys = store.list(prefix)
    except StoreError as e:
        raise DataSpecError(f"{field}: cannot list {uri}: {e}") from e
    if cut < 0:
        keys = [k for k in keys if k == key_pattern or k.startswith(key_pattern.rstrip("/") + "/")]
    else:
        keys = [k for k in keys if fnmatch.fnmatchcase(k, key_pattern)]
    return sorted(f"s3://{bucket}/{k}" for k in keys)


def builtin_dir() -> Path:
    return Path(__file__).parent / "corpus"


def expand(src: SourceSpec, field: str, base_dir: str = "") -> list[str]:
    """All file URIs/paths a source names, sorted; an error naming `field` if there are none."""
    uri = src.uri
    if uri.startswith("s3://"):
        files = _s3_files(uri, field)
    else:
        if uri.startswith(BUILTIN):
            path = str(builtin_dir() / uri[len(BUILTIN):])
        elif uri.startswith("file://"):
            path = uri[len("file://"):]
        elif "://" in uri:
            raise DataSpecError(f"{field}: unsupported scheme in {uri!r} (use a path, file://, s3:// or {BUILTIN})")
        else:
            path = uri if os.path.isabs(uri) or not base_dir else os.path.join(base_dir, uri)
        files = _local_files(path)
    if not files:
        raise DataSpecError(f"{field}: {uri!r} matches no files")
    return files


def list_inputs(sources: tuple[SourceSpec, ...], base_dir: str = "") -> list[InputFile]:
    """The global, numbered file listing (source order, then sorted names; duplicates kept once)."""
    out: list[InputFile] = []
    seen: set[str] = set()
    for i, src in enumerate(sources):
        for f in expand(src, f"data.sources[{i}].uri", base_dir):
            if f not in seen:
                seen.add(f)
                out.append(InputFile(len(out), f, i))
    return out


def read_raw(uri: str) -> bytes:
    """The file's bytes, decompressed by suffix. Raises SkipFile for unreadable local files."""
    if uri.startswith("s3://"):
        from kiln_trainer.storage import open_store

        bucket, _, key = uri[len("s3://"):].partition("/")
        data = open_store(f"s3://{bucket}").get_bytes(key)  # access errors are fatal, not skips
    else:
        try:
            data = Path(uri).read_bytes()
        except OSError as e:
            raise SkipFile("unreadable", f"{uri}: {e.strerror or e}") from e
    try:
        if uri.endswith(".gz"):
            data = gzip.decompress(data)
        elif uri.endswith(".zst"):
            import zstandard

            data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    except Exception as e:  # noqa: BLE001 - any decompression failure is the same counted skip
        raise SkipFile("unreadable", f"{uri}: cannot decompress ({e})") from e
    return data


def _decode_text(data: bytes, uri: str) -> str:
    if b"\x00" in data[:65536]:
        raise SkipFile("binary", f"{uri}: NUL bytes, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SkipFile("binary", f"{uri}: not UTF-8 ({e.reason} at byte {e.start})") from e


def _split_txt(text: str, how: str) -> Iterator[str]:
    if how == "file":
        yield text
        return
    if how == "line":
        yield from text.splitlines()
        return
    block: list[str] = []
    for line in text.splitlines():
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


def _jsonl_docs(text: str, src: SourceSpec, uri: str, field: str, counts: dict[str, int]) -> Iterator[RawDoc]:
    with_field = 0
    records = 0
    for n, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        records += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            counts["bad_json"] = counts.get("bad_json", 0) + 1
            continue
        value = obj.get(src.text_field) if isinstance(obj, dict) else None
        if not isinstance(value, str):
            counts[f"missing_field:{src.text_field}"] = counts.get(f"missing_field:{src.text_field}", 0) + 1
            continue
        with_field += 1
        date = str(obj.get(src.date_field, "")) if src.date_field else ""
        yield RawDoc(n, value, date)
    if records and not with_field:
        raise DataSpecError(
            f"{field}.text_field: no record of {uri} has a string field {src.text_field!r} ({records} records)"
        )


def _parquet_docs(data: bytes, src: SourceSpec, uri: str, field: str) -> Iterator[RawDoc]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001
        raise SkipFile("unreadable", f"{uri}: not a parquet file ({e})") from e
    if src.text_field not in table.column_names:
        raise DataSpecError(
            f"{field}.text_field: {uri} has no column {src.text_field!r} (columns: {', '.join(table.column_names)})"
        )
    texts = table.column(src.text_field).to_pylist()
    dates = table.column(src.date_field).to_pylist() if src.date_field in table.column_names else None
    for n, value in enumerate(texts):
        if isinstance(value, str):
            yield RawDoc(n, value, str(dates[n]) if dates and dates[n] is not None else "")


def read_docs(f: InputFile, src: SourceSpec, counts: dict[str, int]) -> Iterator[RawDoc]:
    """The documents of one file. Counted skips go into `counts`; SkipFile skips the whole file."""
    field = f"data.sources[{f.source_index}]"
    data = read_raw(f.uri)
    if src.format == "parquet":
        yield from _parquet_docs(data, src, f.uri, field)
        return
    text = _decode_text(data, f.uri)
    if src.format == "jsonl":
        yield from _jsonl_docs(text, src, f.uri, field, counts)
        return
    for n, piece in enumerate(_split_txt(text, src.txt_split)):
        yield RawDoc(n, piece)
