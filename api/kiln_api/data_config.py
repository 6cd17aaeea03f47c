"""The data spec of the `prepare` step: what to read, how to clean, dedup, tokenize and pack it.

Both sides import it: the operator embeds it in a TrainingRun and hashes it to decide whether a
prepared dataset can be reused; the trainer runs it. Every dataclass validates itself in
``__post_init__`` and errors name the field (``data.sources[1].weight: must be > 0``).

``DataSpec.spec_hash()`` is a stable hash of the canonical JSON of the spec: it changes when any
setting that changes the output changes, and never with dict ordering or Python version.
``PrepareConfig`` adds where the output goes and how many processes to use; neither is part of the
hash because neither changes the bytes of the dataset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from kiln_api.rules import F, Rule, check_rules, implies
from kiln_api.specfields import SpecError

PIPELINE_VERSION = 3
"""Bump when the prepare code changes its output for the same spec: it is part of `spec_hash`, so
datasets prepared by older code are not reused by mistake."""

FORMATS = ("txt", "jsonl", "parquet")
TXT_SPLITS = ("file", "paragraph", "line")
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<mask>")


DataSpecError = SpecError
"""The old name of kiln_api's one error type (a data spec that cannot be prepared)."""


def _fail(path: str, msg: str) -> SpecError:
    return SpecError(path, msg)


def _check_ratio(path: str, value: float, *, low: float = 0.0, high: float = 1.0) -> None:
    if not isinstance(value, int | float) or not (low <= float(value) <= high):
        raise _fail(path, f"must be a number in [{low}, {high}], got {value!r}")


def _check_int(path: str, value: int, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise _fail(path, f"must be an integer {bound}, got {value!r}")


@dataclass(frozen=True)
class SourceSpec:
    """One input: a path, file:// or s3:// URI with an optional glob, in one format."""

    uri: str
    """Where the files are: ``/abs/dir/*.jsonl.gz``, ``file:///...``, ``s3://bucket/prefix/*.txt``,
    ``builtin://tinycorpus/*`` (the corpus shipped with the trainer) or a path relative to the config
    file. ``*``, ``?`` and ``**`` globs are allowed; a glob matching nothing is an error."""
    format: str = "jsonl"
    """``txt``, ``jsonl`` or ``parquet``; ``.gz`` and ``.zst`` files are decompressed by suffix."""
    text_field: str = "text"
    """The jsonl key / parquet column holding the document text."""
    weight: float = 1.0
    """Sampling weight: 0.5 keeps about half the documents (chosen by a seeded hash), 2.5 repeats
    every document twice and a seeded half of them a third time."""
    domain: str = "default"
    """A tag carried into the report (documents and tokens per domain)."""
    txt_split: str = "paragraph"
    """For txt: one document per ``file``, per blank-line separated ``paragraph`` or per ``line``."""
    date_field: str = ""
    """jsonl/parquet key holding an ISO date (YYYY-MM-DD...); used by ``filters.date_from/date_to``."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(implies(F.format != "txt", F.text_field != ""), "text_field",
             "must name the field that holds the text when {format} is not txt"),
    )

    def validate(self, path: str) -> None:
        if not isinstance(self.uri, str) or not self.uri.strip():
            raise _fail(f"{path}.uri", "must be a non-empty path or URI")
        if self.format not in FORMATS:
            raise _fail(f"{path}.format", f"must be one of {', '.join(FORMATS)}, got {self.format!r}")
        check_rules(self, path)
        if not isinstance(self.weight, int | float) or isinstance(self.weight, bool) or not 0 < self.weight <= 100:
            raise _fail(f"{path}.weight", f"must be a number in (0, 100], got {self.weight!r}")
        if self.txt_split not in TXT_SPLITS:
            raise _fail(f"{path}.txt_split", f"must be one of {', '.join(TXT_SPLITS)}, got {self.txt_split!r}")
        if not self.domain or not isinstance(self.domain, str):
            raise _fail(f"{path}.domain", "must be a non-empty string")


@dataclass(frozen=True)
class CleanSpec:
    """Text normalisation applied before filtering and hashing."""

    nfkc: bool = True
    """Unicode NFKC (full-width Latin letters and digits become ASCII; CJK punctuation is kept)."""
    strip_markup: bool = True
    """Remove HTML tags (with the content of scripts and styles) and decode HTML entities."""
    strip_terminal: bool = True
    """Remove terminal escape sequences whole (ECMA-48 CSI/OSC/DCS/..., 7-bit and 8-bit forms),
    overstrike (``N\\bN``) and colour remnants that lost their ESC (``[33m``)."""
    strip_roff: bool = True
    """In documents that are man-page (roff) source: keep the text groff would print, drop requests
    (``.TH .SH .TP``...), font escapes (``\\fB``) and comments; specials become characters."""
    strip_wiki: bool = True
    """In documents with MediaWiki markup: drop templates, references, file/category links and table
    markup; links, bold, italics and headings keep their text."""
    strip_markdown: bool = True
    """In documents with Markdown syntax: headings, emphasis, links and tables keep their text,
    images and fences go, code stays."""
    join_cjk_lines: bool = True
    """Join lines broken inside CJK sentences (a break between two CJK characters, or a CJK character
    and CJK punctuation); empty lines, indented lines and breaks next to Latin text stay."""
    max_newlines: int = 2
    """Runs of more blank lines are shortened to this many newlines."""

    def validate(self, path: str) -> None:
        for f in fields(self):
            if f.type in ("bool", bool) and not isinstance(getattr(self, f.name), bool):
                raise _fail(f"{path}.{f.name}", f"must be true or false, got {getattr(self, f.name)!r}")
        _check_int(f"{path}.max_newlines", self.max_newlines, low=1, high=10)


@dataclass(frozen=True)
class FilterSpec:
    """Quality thresholds; each rejected document is counted under the rule that rejected it.

    Lengths count *units*: a Latin/Cyrillic word is one unit and so is every CJK character, so the
    same threshold suits English and Chinese."""

    min_units: int = 5
    """Shortest document kept, in units."""
    max_units: int = 200_000
    """Longest document kept, in units."""
    max_symbol_ratio: float = 0.25
    """Largest share of non-space characters that are symbols (not letters, digits, punctuation)."""
    max_digit_ratio: float = 0.3
    """Largest share of non-space characters that are digits."""
    max_repeated_ngram_ratio: float = 0.3
    """Largest share of unit n-grams that repeat an earlier n-gram of the same document."""
    repeated_ngram_size: int = 4
    """n for the repeated n-gram rule (units, so CJK characters count one each)."""
    max_bad_char_ratio: float = 0.01
    """Largest share of U+FFFD, private-use or unassigned characters (mojibake)."""
    date_from: str = ""
    """Keep only documents dated on/after this ISO date (sources with ``date_field``); empty: no bound."""
    date_to: str = ""
    """Keep only documents dated on/before this ISO date; empty: no bound."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(F.max_units >= F.min_units, "max_units", "{max_units} must be >= {min_units}"),
    )

    def validate(self, path: str) -> None:
        _check_int(f"{path}.min_units", self.min_units, low=0)
        _check_int(f"{path}.max_units", self.max_units, low=1)
        check_rules(self, path)
        _check_ratio(f"{path}.max_symbol_ratio", self.max_symbol_ratio)
        _check_ratio(f"{path}.max_digit_ratio", self.max_digit_ratio)
        _check_ratio(f"{path}.max_repeated_ngram_ratio", self.max_repeated_ngram_ratio)
        _check_int(f"{path}.repeated_ngram_size", self.repeated_ngram_size, low=1, high=32)
        _check_ratio(f"{path}.max_bad_char_ratio", self.max_bad_char_ratio)
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            if value and not _is_iso_date(value):
                raise _fail(f"{path}.{name}", f"must be an ISO date YYYY-MM-DD, got {value!r}")


def _is_iso_date(value: str) -> bool:
    from datetime import date

    try:
        date.fromisoformat(value[:10])
    except (TypeError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class DedupSpec:
    """Exact and near-duplicate removal across all sources (the first document by input order wins)."""

    exact: bool = True
    """Drop documents whose normalised text (lower case, whitespace collapsed) was seen before."""
    near: bool = True
    """Drop near-duplicates found by MinHash + LSH."""
    threshold: float = 0.8
    """Estimated Jaccard similarity of unit shingles at or above which two documents are duplicates."""
    num_perm: int = 128
    """MinHash signature length."""
    bands: int = 16
    """LSH bands; must divide num_perm. More bands find lower similarities (more candidates to check)."""
    shingle_size: int = 5
    """Units per shingle: a Latin word, a digit run or a single CJK character is one unit, so Chinese
    (no spaces) and English get shingles of similar information."""
    seed: int = 1
    """Seed of the MinHash hash functions."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(F.num_perm % F.bands == 0, "bands", "{bands} must divide {num_perm}"),
    )

    def validate(self, path: str) -> None:
        _check_ratio(f"{path}.threshold", self.threshold, low=0.05, high=1.0)
        _check_int(f"{path}.num_perm", self.num_perm, low=8, high=1024)
        _check_int(f"{path}.bands", self.bands, low=1, high=self.num_perm)
        check_rules(self, path)
        _check_int(f"{path}.shingle_size", self.shingle_size, low=1, high=64)
        _check_int(f"{path}.seed", self.seed, low=0)


@dataclass(frozen=True)
class TokenizerSpec:
    """SentencePiece BPE training. Special ids are fixed: pad 0, unk 1, bos 2, eos 3, mask 4."""

    vocab_size: int = 64_000
    """Pieces in the vocabulary, specials and 256 byte-fallback pieces included."""
    character_coverage: float = 0.9995
    """Share of characters covered by pieces; the rest go through byte fallback (>= 0.9995 for CJK)."""
    byte_fallback: bool = True
    """Unknown characters become UTF-8 byte pieces, so nothing maps to <unk>."""
    user_defined_symbols: tuple[str, ...] = ()
    """Extra tokens that are never split (besides <mask>)."""
    input_sentence_size: int = 2_000_000
    """At most this many lines (a seeded sample) are used for training."""
    split_digits: bool = True
    """Every digit is its own piece (better arithmetic, fewer rare numbers)."""
    seed: int = 17
    """Seed of the training-line sample."""

    def validate(self, path: str) -> None:
        _check_int(f"{path}.vocab_size", self.vocab_size, low=300, high=1_000_000)
        _check_ratio(f"{path}.character_coverage", self.character_coverage, low=0.98, high=1.0)
        _check_int(f"{path}.input_sentence_size", self.input_sentence_size, low=100)
        for i, sym in enumerate(self.user_defined_symbols):
            if not isinstance(sym, str) or not sym or sym in SPECIAL_TOKENS:
                raise _fail(f"{path}.user_defined_symbols[{i}]", f"must be a new non-empty string, got {sym!r}")


@dataclass(frozen=True)
class PackSpec:
    """How tokenized documents are split and written."""

    val_fraction: float = 0.01
    """Share of documents (chosen by a seeded hash) that go to the validation split."""
    seed: int = 1234
    """Seed of the train/validation assignment."""
    num_shards: int = 1
    """Train shards (files) to write; validation always gets one."""

    def validate(self, path: str) -> None:
        _check_ratio(f"{path}.val_fraction", self.val_fraction, low=0.0, high=0.5)
        _check_int(f"{path}.seed", self.seed, low=0)
        _check_int(f"{path}.num_shards", self.num_shards, low=1, high=100_000)


@dataclass(frozen=True)
class DataSpec:
    """Everything that determines the bytes of a prepared dataset."""

    sources: tuple[SourceSpec, ...]
    """Inputs, in priority order: on duplicates the earlier source's document is kept."""
    clean: CleanSpec = field(default_factory=CleanSpec)
    """Normalisation."""
    filters: FilterSpec = field(default_factory=FilterSpec)
    """Quality filters."""
    dedup: DedupSpec = field(default_factory=DedupSpec)
    """Duplicate removal."""
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    """Tokenizer training."""
    packing: PackSpec = field(default_factory=PackSpec)
    """Splits and shards."""
    sample_seed: int = 7
    """Seed of the per-source weight sampling."""

    def __post_init__(self) -> None:
        if not self.sources:
            raise _fail("data.sources", "at least one source is required")
        for i, src in enumerate(self.sources):
            src.validate(f"data.sources[{i}]")
        self.clean.validate("data.clean")
        self.filters.validate("data.filters")
        self.dedup.validate("data.dedup")
        self.tokenizer.validate("data.tokenizer")
        self.packing.validate("data.packing")
        _check_int("data.sample_seed", self.sample_seed, low=0)

    def canonical_json(self) -> str:
        """Sorted-key JSON of every field plus the pipeline version: the input of `spec_hash`."""
        doc = {**asdict(self), "pipeline_version": PIPELINE_VERSION}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def spec_hash(self) -> str:
        """A stable 16-hex-digit hash of the spec."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, raw: Any, path: str = "data") -> DataSpec:
        if not isinstance(raw, dict):
            raise _fail(path, f"must be a mapping, got {type(raw).__name__}")
        raw_sources = raw.get("sources")
        if not isinstance(raw_sources, list) or not raw_sources:
            raise _fail(f"{path}.sources", "at least one source is required (a non-empty list)")
        sources = tuple(_build(SourceSpec, s, f"{path}.sources[{i}]") for i, s in enumerate(raw_sources))
        parts: dict[str, Any] = {"sources": sources}
        for name, typ in (("clean", CleanSpec), ("filters", FilterSpec), ("dedup", DedupSpec),
                          ("tokenizer", TokenizerSpec), ("packing", PackSpec)):
            if name in raw:
                parts[name] = _build(typ, raw[name], f"{path}.{name}")
        if "sample_seed" in raw:
            parts["sample_seed"] = raw["sample_seed"]
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise _fail(f"{path}.{unknown[0]}", "unknown field")
        return cls(**parts)


def _build(typ: Any, raw: Any, path: str) -> Any:
    """A dataclass from a mapping, rejecting unknown keys by name."""
    if not isinstance(raw, dict):
        raise _fail(path, f"must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in fields(typ)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _fail(f"{path}.{unknown[0]}", f"unknown field (known: {', '.join(sorted(known))})")
    values = dict(raw)
    if "user_defined_symbols" in values:
        values["user_defined_symbols"] = tuple(values["user_defined_symbols"] or ())
    try:
        return typ(**values)
    except TypeError as e:
        raise _fail(path, str(e)) from e


@dataclass(frozen=True)
class PrepareConfig:
    """The file given to ``kiln-trainer prepare --config``: a data spec and where to put the result."""

    output: str
    """Storage root (``s3://bucket/prefix`` or ``file:///abs``); the dataset goes to
    ``<output>/datasets/<data-hash>/``."""
    data: DataSpec
    """What to prepare."""
    workers: int = 0
    """Processes for cleaning and encoding; 0 means one per CPU core."""
    base_dir: str = ""
    """Directory that relative source paths are resolved against (the config file's folder)."""

    def __post_init__(self) -> None:
        if not isinstance(self.output, str) or not self.output.startswith(("s3://", "file:///")):
            raise _fail("output", f"must be an s3:// or file:/// URI, got {self.output!r}")
        _check_int("workers", self.workers, low=0, high=1024)

    @classmethod
    def from_dict(cls, raw: Any, base_dir: str = "") -> PrepareConfig:
        if not isinstance(raw, dict):
            raise _fail("config", f"must be a mapping, got {type(raw).__name__}")
        unknown = sorted(set(raw) - {"output", "data", "workers"})
        if unknown:
            raise _fail(unknown[0], "unknown field (known: data, output, workers)")
        if "output" not in raw:
            raise _fail("output", "is required (s3://bucket/prefix or file:///abs/dir)")
        if "data" not in raw:
            raise _fail("data", "is required")
        return cls(output=raw["output"], data=DataSpec.from_dict(raw["data"]),
                   workers=raw.get("workers", 0), base_dir=base_dir)
