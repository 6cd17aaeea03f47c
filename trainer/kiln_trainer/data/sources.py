"""Finding input files (local, file://, s3://, builtin://tinycorpus, with globs) and reading documents.

Files are listed once, sorted, and numbered: the number is part of every document's key, so the
order of documents never depends on how the work was split between processes.

Missing jsonl fields are a *counted skip* (web dumps carry the odd metadata-only record), except when
no record of a file has the field: that is a typo in the config, so it is an error naming
``text_field``. Unreadable files (permissions, bad gzip) and binary files are counted skips.
"""

from __future__ import annotations

import codecs
import contextlib
import fnmatch
import glob
import gzip
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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


_HEAD = 65536  # bytes checked for NUL and UTF-8 before a file is accepted as text


@contextlib.contextmanager
def _local_path(uri: str) -> Iterator[Path]:
    """A local path for the file: itself, or a temporary download of an s3:// object."""
    if not uri.startswith("s3://"):
        yield Path(uri)
        return
    from kiln_trainer.storage import open_store

    bucket, _, key = uri[len("s3://"):].partition("/")
    fd, tmp = tempfile.mkstemp(prefix="kiln-src-")
    os.close(fd)
    try:
        open_store(f"s3://{bucket}").get_file(key, tmp)  # access errors are fatal, not skips
        yield Path(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _open_stream(path: Path, uri: str) -> BinaryIO:
    """The file's bytes as a stream, decompressed by suffix; SkipFile if it cannot be opened."""
    try:
        if uri.endswith(".gz"):
            return gzip.open(path, "rb")
        if uri.endswith(".zst"):
            import zstandard

            return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # noqa: SIM115
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as e:
        raise SkipFile("unreadable", f"{uri}: {e.strerror or e}") from e


def _read(raw: BinaryIO, n: int, uri: str) -> bytes:
    try:
        return raw.read(n)
    except Exception as e:  # noqa: BLE001 - gzip/zlib/zstd/OS errors all mean the same counted skip
        raise SkipFile("unreadable", f"{uri}: cannot read or decompress ({e})") from e


def iter_lines(path: Path, uri: str) -> Iterator[str]:
    """Lines (without "\\n" or "\\r") streamed from a text file of any size.

    The first 64 KiB decide whether it is text (no NUL, valid UTF-8), else SkipFile("binary");
    a stray bad byte later becomes U+FFFD, which the bad-character filter then counts."""
    with _open_stream(path, uri) as raw:
        block = _read(raw, _HEAD, uri)
        if b"\x00" in block:
            raise SkipFile("binary", f"{uri}: NUL bytes, not text")
        try:
            codecs.getincrementaldecoder("utf-8")("strict").decode(block, final=False)
        except UnicodeDecodeError as e:
            raise SkipFile("binary", f"{uri}: not UTF-8 ({e.reason} at byte {e.start})") from e
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        rest = ""
        while block:
            lines = (rest + decoder.decode(block)).split("\n")
            rest = lines.pop()
            for line in lines:
                yield line.rstrip("\r")
            block = _read(raw, 1 << 20, uri)
        rest += decoder.decode(b"", final=True)
        if rest:
            yield rest.rstrip("\r")


def _split_txt(lines: Iterator[str], how: str) -> Iterator[str]:
    if how == "file":
        yield "\n".join(lines)
        return
    if how == "line":
        yield from lines
        return
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


def _jsonl_docs(lines: Iterator[str], src: SourceSpec, uri: str, field: str, counts: dict[str, int]) -> Iterator[RawDoc]:
    with_field = 0
    records = 0
    for n, line in enumerate(lines):
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


def _parquet_docs(path: Path, src: SourceSpec, uri: str, field: str) -> Iterator[RawDoc]:
    """Rows streamed by record batch, reading only the text (and date) columns."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001
        raise SkipFile("unreadable", f"{uri}: not a parquet file ({e})") from e
    names = pf.schema_arrow.names
    if src.text_field not in names:
        raise DataSpecError(f"{field}.text_field: {uri} has no column {src.text_field!r} (columns: {', '.join(names)})")
    columns = [src.text_field] + ([src.date_field] if src.date_field in names else [])
    n = 0
    for batch in pf.iter_batches(batch_size=1024, columns=columns):
        texts = batch.column(0).to_pylist()
        dates = batch.column(1).to_pylist() if len(columns) > 1 else [None] * len(texts)
        for value, date in zip(texts, dates, strict=True):
            if isinstance(value, str):
                yield RawDoc(n, value, "" if date is None else str(date))
            n += 1


def read_docs(f: InputFile, src: SourceSpec, counts: dict[str, int]) -> Iterator[RawDoc]:
    """The documents of one file, streamed. Counted skips go into `counts`; SkipFile skips the file."""
    field = f"data.sources[{f.source_index}]"
    with _local_path(f.uri) as path:
        if src.format == "parquet":
            yield from _parquet_docs(path, src, f.uri, field)
        elif src.format == "jsonl":
            yield from _jsonl_docs(iter_lines(path, f.uri), src, f.uri, field, counts)
        else:
            for n, piece in enumerate(_split_txt(iter_lines(path, f.uri), src.txt_split)):
                yield RawDoc(n, piece)
