"""HTML left over from extraction: tags go (with the content of scripts and styles), entities decode.

A tag is ``<name …>`` or ``</name>`` with a letter right after ``<``, so ``a < b`` in prose stays.
"""

from __future__ import annotations

import html
import re

_INVISIBLE = re.compile(r"<(script|style|noscript|template)\b[^>]*>.*?</\1\s*>", re.S | re.I)
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]{0,500})?/?>", re.S)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def looks_like(text: str) -> bool:
    return ("<" in text and _TAG.search(text) is not None) or ("&" in text and _ENTITY.search(text) is not None)


def strip(text: str) -> str:
    if "<" in text:
        text = _INVISIBLE.sub(" ", text)
        text = _TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    return text
