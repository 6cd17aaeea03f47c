"""The prepare report: documents in/out per stage with counted reasons, dedup rates, tokens, seconds.

Stages counted (``counts[stage][key]``): ``input`` (documents read, files and records skipped by
reason), ``sampling``, ``clean_docs`` and ``clean_chars_removed`` (per cleaning step: documents it
changed, characters it removed; see clean.py), ``filters`` (kept, or the rule that rejected),
``dedup``, ``tokenizer``, ``tokens`` (per split), ``tokens_by_domain``, ``documents_by_domain``.
Extras: ``dedup_rate``, ``tokenizer_coverage`` (inspect.py), ``skipped_files``.

Parts written by parallel shards are plain JSON of the same shape and are summed by `merge`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Report:
    """Counters by stage; `counts[stage][key]` is an integer, `seconds[stage]` wall time."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, stage: str, key: str, n: int = 1) -> None:
        bucket = self.counts.setdefault(stage, {})
        bucket[key] = bucket.get(key, 0) + n

    def get(self, stage: str, key: str) -> int:
        return self.counts.get(stage, {}).get(key, 0)

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 3)

    def merge(self, other: Report) -> None:
        for stage, bucket in other.counts.items():
            for key, n in bucket.items():
                self.add(stage, key, n)
        for stage, s in other.seconds.items():
            # parallel shards overlap in time: the slowest one is what the stage cost
            self.seconds[stage] = max(self.seconds.get(stage, 0.0), s)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"counts": self.counts, "seconds": self.seconds, **self.extra}
        kept = self.get("filters", "kept")
        if kept:
            dd = self.counts.get("dedup", {})
            out["dedup_rate"] = {
                "exact": round(dd.get("exact_dropped", 0) / kept, 6),
                "near": round(dd.get("near_dropped", 0) / kept, 6),
            }
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Report:
        return cls(counts={k: dict(v) for k, v in raw.get("counts", {}).items()},
                   seconds=dict(raw.get("seconds", {})))
