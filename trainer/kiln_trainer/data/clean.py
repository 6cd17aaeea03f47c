"""Text normalisation: NFKC, control characters, whitespace, markup remnants.

CJK text passes through unchanged: NFKC is the identity on ideographs, and the full-width
punctuation Chinese uses (，！？：；（）～) is shielded from NFKC's ASCII folding, because turning
"你好，世界" into "你好,世界" changes the typography of every Chinese document we train on.
"""

from __future__ import annotations

import html
import re
import unicodedata

from kiln_api.data_config import CleanSpec

# Full-width punctuation NFKC would fold to ASCII; swapped for private-use placeholders around NFKC.
_SHIELDED = "，！？：；（）～"
_TO_PLACEHOLDER = {ord(c): chr(0xF0000 + i) for i, c in enumerate(_SHIELDED)}
_FROM_PLACEHOLDER = {0xF0000 + i: c for i, c in enumerate(_SHIELDED)}

_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]{0,500})?/?>", re.S)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")
_LINE_EDGES = re.compile(r" *\n *")


def normalize_unicode(text: str) -> str:
    """NFKC that keeps Chinese full-width punctuation."""
    shielded = text.translate(_TO_PLACEHOLDER)
    return unicodedata.normalize("NFKC", shielded).translate(_FROM_PLACEHOLDER)


def clean_text(text: str, spec: CleanSpec) -> str:
    """The cleaned document; may be empty (the length filter then rejects it)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if spec.nfkc:
        text = normalize_unicode(text)
    if spec.strip_markup:
        if "<" in text:
            text = _TAG.sub(" ", text)
        if "&" in text:
            text = html.unescape(text)
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _LINE_EDGES.sub("\n", text)
    text = re.sub(f"\n{{{spec.max_newlines + 1},}}", "\n" * spec.max_newlines, text)
    return text.strip()


def dedup_key(text: str) -> str:
    """The text exact dedup compares: case-folded, whitespace-free (so re-wrapped copies match)."""
    return re.sub(r"\s+", "", text.casefold())
