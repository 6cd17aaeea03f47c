"""Quality filters. Each returns a reason string (the report key) or None to keep the document.

Script-aware: ratios are over non-space characters, lengths over *units* where a Latin word is one
unit and each CJK character is one unit; nothing assumes words are separated by spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kiln_api.data_config import FilterSpec

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0002fa1f"
UNITS = re.compile(rf"[{_CJK}]|[^\W\d_]+|\d+")
"""A unit: one CJK character, one run of letters (a word) or one run of digits."""
_NONSPACE = re.compile(r"\S")
_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")
# Punctuation of Latin and CJK writing plus combining marks: none of these count as symbols.
_PUNCT = re.compile(r"""[!"#%&'()*,\-./:;?@\[\\\]_{}\u00a1\u00a7\u00ab\u00b6\u00b7\u00bb\u00bf"""
                    r"""\u0300-\u036f\u2010-\u2027\u2030-\u205e\u3000-\u303f\uff01-\uff0f\uff1a-\uff20"""
                    r"""\uff3b-\uff40\uff5b-\uff65\ufe10-\ufe19\ufe30-\ufe4f]""")
_BAD = re.compile("[\ufffd\ue000-\uf8ff\U000f0000-\U0010ffff]")


@dataclass(frozen=True)
class TextStats:
    """Counts one pass over the text yields; the rules are thresholds on these."""

    units: list[str]
    nonspace: int
    letters: int
    digits: int
    punct: int
    bad: int

    @classmethod
    def of(cls, text: str) -> TextStats:
        return cls(
            units=UNITS.findall(text.casefold()),
            nonspace=len(_NONSPACE.findall(text)),
            letters=len(_LETTER.findall(text)),
            digits=len(_DIGIT.findall(text)),
            punct=len(_PUNCT.findall(text)),
            bad=len(_BAD.findall(text)),
        )

    @property
    def symbols(self) -> int:
        return max(0, self.nonspace - self.letters - self.digits - self.punct)


def repeated_ngram_ratio(units: list[str], n: int) -> float:
    """Share of unit n-grams that already occurred earlier in the same document."""
    total = len(units) - n + 1
    if total <= 0:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for i in range(total):
        gram = tuple(units[i:i + n])
        if gram in seen:
            repeats += 1
        else:
            seen.add(gram)
    return repeats / total


def check_quality(text: str, spec: FilterSpec) -> str | None:
    """The first rule the text breaks, in a fixed order, or None."""
    st = TextStats.of(text)
    if len(st.units) < spec.min_units:
        return "too_short"
    if len(st.units) > spec.max_units:
        return "too_long"
    denom = max(1, st.nonspace)
    if st.bad / denom > spec.max_bad_char_ratio:
        return "bad_chars"
    if st.symbols / denom > spec.max_symbol_ratio:
        return "symbol_ratio"
    if st.digits / denom > spec.max_digit_ratio:
        return "digit_ratio"
    if repeated_ngram_ratio(st.units, spec.repeated_ngram_size) > spec.max_repeated_ngram_ratio:
        return "repeated_ngrams"
    return None


def check_date(date: str, spec: FilterSpec) -> str | None:
    """Date window: undated documents pass; dated ones outside [date_from, date_to] do not."""
    if not (spec.date_from or spec.date_to) or not date:
        return None
    day = date.strip()[:10]
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        return "bad_date"
    if spec.date_from and day < spec.date_from[:10]:
        return "date_window"
    if spec.date_to and day > spec.date_to[:10]:
        return "date_window"
    return None
