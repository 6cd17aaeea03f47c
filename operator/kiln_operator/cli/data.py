"""`kiln data report|sample`: what prepare made of a run's data, read from the dataset folder.

Both read files the trainer's prepare step writes next to the dataset's manifest (see
``kiln_trainer/data/manifest.py``): ``report.json`` (counts by stage, tokenizer coverage) and
``samples.jsonl`` (documents decoded from the train shards). Nothing here decodes tokens, so the
CLI needs no tokenizer library. The target is a TrainingRun name (its ``status.artifacts.dataset``)
or a dataset URI (``s3://…/datasets/<hash>``, ``file:///…``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from kiln_operator.cli import commands
from kiln_operator.cli.commands import CLIError
from kiln_operator.cli.storage import StorageError, read_bytes

REPORT = "report.json"
SAMPLES = "samples.jsonl"


def _dataset(args: argparse.Namespace) -> tuple[str, str | None]:
    """(dataset folder URI, S3 endpoint) of the target."""
    if args.run.startswith(("s3://", "file://")):
        return args.run.rstrip("/"), os.environ.get("AWS_ENDPOINT_URL")
    run = commands._get_run(args, args.run)
    status = run.get("status") or {}
    uri = (status.get("artifacts") or {}).get("dataset")
    if not uri:
        raise CLIError(f"TrainingRun {args.run} has no prepared dataset yet (phase {status.get('phase', 'Pending')})")
    return uri.removesuffix("/manifest.json").rstrip("/"), commands.storage_endpoint(run)


def _read(folder: str, name: str, endpoint: str | None) -> bytes:
    try:
        return read_bytes(f"{folder}/{name}", endpoint)
    except StorageError as e:
        raise CLIError(f"cannot read the dataset's {name}: {e}") from e


def report(args: argparse.Namespace) -> int:
    folder, endpoint = _dataset(args)
    raw = json.loads(_read(folder, REPORT, endpoint))
    if args.json:
        print(json.dumps(raw, indent=1, ensure_ascii=False))
    else:
        print(f"dataset {folder}")
        print(report_text(raw))
    return 0


def sample(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise CLIError(f"-n: must be at least 1, got {args.n}")
    folder, endpoint = _dataset(args)
    records = [json.loads(line) for line in _read(folder, SAMPLES, endpoint).decode("utf-8").splitlines() if line]
    for r in records[:args.n]:
        cut = ", cut for display" if r.get("truncated") else ""
        print(f"── {r['shard']} document {r['document']} ({r['tokens']} tokens{cut})")
        print(r["text"])
        print()
    if args.n > len(records):
        print(f"(prepare stored {len(records)} samples; all shown)", file=sys.stderr)
    return 0


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"


def _reasons(bucket: dict[str, int], skip: tuple[str, ...] = ()) -> str:
    items = sorted(((k, v) for k, v in bucket.items() if k not in skip and v), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:,}" for k, v in items)


def report_text(rep: dict[str, Any]) -> str:
    """The report for people: documents through each stage, cleaning, tokens by domain, coverage."""
    c: dict[str, dict[str, int]] = rep.get("counts", {})
    read = c.get("input", {}).get("docs_read", 0)
    filters, dedup = c.get("filters", {}), c.get("dedup", {})
    rejected = sum(v for k, v in filters.items() if k != "kept")
    dropped = dedup.get("exact_dropped", 0) + dedup.get("near_dropped", 0)
    skips = _reasons(c.get("input", {}), skip=("docs_read", "files_read"))
    lines = [
        "documents",
        f"  read                  {read:>10,}" + (f"   (skipped: {skips})" if skips else ""),
        f"  sampled out           {c.get('sampling', {}).get('sampled_out', 0):>10,}",
        f"  rejected by filters   {rejected:>10,}" + (f"   ({_reasons(filters, skip=('kept',))})" if rejected else ""),
        f"  kept by filters       {filters.get('kept', 0):>10,}",
        f"  dropped by dedup      {dropped:>10,}   (exact {dedup.get('exact_dropped', 0):,} = "
        f"{_pct(dedup.get('exact_dropped', 0), filters.get('kept', 0))}, near {dedup.get('near_dropped', 0):,} = "
        f"{_pct(dedup.get('near_dropped', 0), filters.get('kept', 0))})",
        f"  in the dataset        {dedup.get('kept', 0):>10,}",
        "cleaning                 documents changed   characters removed",
    ]
    for step, docs in sorted(c.get("clean_docs", {}).items(), key=lambda kv: -kv[1]):
        removed = c.get("clean_chars_removed", {}).get(step, 0)
        lines.append(f"  {step:<12} {docs:>18,} ({_pct(docs, read):>7}) {removed:>14,}")
    if not c.get("clean_docs"):
        lines.append("  (no document needed cleaning)")
    tokens = c.get("tokens", {})
    total = sum(tokens.values())
    lines.append(f"tokens                {total:>10,}   (train {tokens.get('train', 0):,}, val {tokens.get('val', 0):,})")
    docs_by = c.get("documents_by_domain", {})
    for dom, n in sorted(c.get("tokens_by_domain", {}).items(), key=lambda kv: -kv[1]):
        lines.append(f"  {dom:<20}{n:>10,}   {_pct(n, total):>7}   {docs_by.get(dom, 0):,} documents")
    lines += _coverage_lines(rep.get("tokenizer_coverage") or {})
    return "\n".join(lines)


def _coverage_lines(cov: dict[str, Any]) -> list[str]:
    if not cov:
        return ["tokenizer coverage    (not in this report: prepared by an older kiln)"]
    share = cov.get("cjk_single_piece_share")
    out = [f"tokenizer coverage    {cov.get('cjk_chars', 0):,} CJK characters, {cov.get('cjk_distinct', 0):,} distinct"]
    if share is not None:
        out.append(f"  single pieces       {100 * share:.2f}% of occurrences, "
                   f"{100 * cov['cjk_distinct_single_piece_share']:.2f}% of distinct characters")
        out.append(f"  byte fallback       {cov.get('cjk_byte_fallback_chars', 0):,} CJK characters "
                   f"({100 * (1 - share):.2f}%)")
    if cov.get("byte_fallback_token_share") is not None:
        out.append(f"  byte tokens         {100 * cov['byte_fallback_token_share']:.2f}% of all tokens"
                   + (f" (newlines, one byte piece each, apart: {100 * cov['newline_token_share']:.2f}%)"
                      if cov.get("newline_token_share") is not None else ""))
    if cov.get("top_byte_fallback_chars"):
        out.append(f"  most frequent characters without a piece: {cov['top_byte_fallback_chars']}")
    return out
