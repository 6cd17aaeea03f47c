"""HTML left over from extraction: tags go (with the content of scripts and styles), entities decode.

A tag is ``<name …>`` or ``</name>`` where name is an HTML element, so ``a < b`` in prose and the
placeholders of usage lines (``cp <file> <dir>``, ``FORMAT1<newline>FORMAT2``) stay. What a tag
leaves is what a browser shows in its place: a block element (``p``, ``div``, ``li``, ``br``, headings)
an empty line, a table cell a space, an inline element (``b``, ``span``, ``a``) nothing — a space there
would split Chinese words (``中文<b>加粗</b>`` is ``中文加粗``).
"""

from __future__ import annotations

import html
import re

_INVISIBLE = re.compile(r"<(script|style|noscript|template)\b[^>]*>.*?</\1\s*>", re.S | re.I)
_ELEMENTS = (
    "a abbr address area article aside audio b base bdi bdo blockquote body br button canvas caption center "
    "cite code col colgroup data datalist dd del details dfn dialog div dl dt em embed fieldset figcaption "
    "figure font footer form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe img input "
    "ins kbd label legend li link main map mark menu meta meter nav noscript object ol optgroup option output "
    "p param picture pre progress q rp rt ruby s samp script section select small source span strike strong "
    "style sub summary sup svg table tbody td template textarea tfoot th thead time title tr track tt u ul "
    "var video wbr"
).split()
_TAG = re.compile(rf"<!--.*?-->|</?(?:{'|'.join(_ELEMENTS)})(?:\s[^<>]{{0,500}})?/?>", re.S | re.I)
_BLOCK = set(
    "address article aside blockquote body br caption center dd details dialog div dl dt fieldset figcaption "
    "figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr html li main nav ol p pre section summary table "
    "tbody tfoot thead title tr ul".split()
)
_CELL = {"td", "th"}
_ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def looks_like(text: str) -> bool:
    return ("<" in text and _TAG.search(text) is not None) or ("&" in text and _ENTITY.search(text) is not None)


def _replacement(m: re.Match[str]) -> str:
    name = re.match(r"</?([A-Za-z0-9]*)", m.group(0))
    tag = name.group(1).lower() if name else ""
    # an empty line, not a single break: the CJK line joiner must not merge list items or <br> lines
    return "\n\n" if tag in _BLOCK else " " if tag in _CELL else ""


def strip(text: str) -> str:
    if "<" in text:
        text = _INVISIBLE.sub(" ", text)
        text = _TAG.sub(_replacement, text)
    if "&" in text:
        text = html.unescape(text)
    return text
