"""Text normalisation: the cleaning steps every document goes through, in order, each one counted.

Steps (each switched by a `CleanSpec` field, all on by default; modules in ``cleaners/``):

    terminal   ECMA-48 escape sequences, overstrike, ESC-less colour remnants   strip_terminal
    nfkc       Unicode NFKC that keeps Chinese full-width punctuation           nfkc
    roff       man-page source: requests, font escapes, specials                strip_roff
    wiki       MediaWiki: templates, [[links|text]], '''bold''', tables         strip_wiki
    markdown   headings, emphasis, links, images, fences, tables                strip_markdown
    html       tags (script/style content too), entities                        strip_markup
    control    control and invisible format characters                          (always)
    cjk_lines  line breaks inside CJK sentences                                 join_cjk_lines
    whitespace runs of spaces, spaces at line edges, runs of blank lines        (always)

Markup steps come before `control` so that a sequence goes whole before its ESC alone could be
dropped, and `cjk_lines` runs before the whitespace step so it can still see indented paragraphs.
With a `Report`, each step that changed a document adds 1 to ``clean_docs[step]`` and the number of
characters it removed to ``clean_chars_removed[step]``.

CJK text passes NFKC unchanged: NFKC is the identity on ideographs, and the full-width punctuation
Chinese uses (，！？：；（）～) is shielded from NFKC's ASCII folding, because turning "你好，世界"
into "你好,世界" changes the typography of every Chinese document we train on.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from types import ModuleType

from kiln_api.data_config import CleanSpec

from kiln_trainer.data.cleaners import cjk_lines, html, markdown, roff, terminal, wiki
from kiln_trainer.data.report import Report

# Full-width punctuation NFKC would fold to ASCII; swapped for private-use placeholders around NFKC.
_SHIELDED = "，！？：；（）～"
_TO_PLACEHOLDER = {ord(c): chr(0xF0000 + i) for i, c in enumerate(_SHIELDED)}
_FROM_PLACEHOLDER = {0xF0000 + i: c for i, c in enumerate(_SHIELDED)}

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")
_LINE_EDGES = re.compile(r" *\n *")

Step = tuple[str, Callable[[str], str]]


def normalize_unicode(text: str) -> str:
    """NFKC that keeps Chinese full-width punctuation."""
    shielded = text.translate(_TO_PLACEHOLDER)
    return unicodedata.normalize("NFKC", shielded).translate(_FROM_PLACEHOLDER)


def _only_if_present(module: ModuleType) -> Callable[[str], str]:
    """A format's cleaner that leaves documents without that format alone, at the cost of a test."""
    def run(text: str) -> str:
        return str(module.strip(text)) if module.looks_like(text) else text
    return run


def _whitespace(max_newlines: int) -> Callable[[str], str]:
    too_many = re.compile(f"\n{{{max_newlines + 1},}}")

    def run(text: str) -> str:
        text = _LINE_EDGES.sub("\n", _SPACES.sub(" ", text))
        return too_many.sub("\n" * max_newlines, text).strip()
    return run


@functools.lru_cache(maxsize=16)
def steps(spec: CleanSpec) -> list[Step]:
    """The enabled steps, in the order they run."""
    chosen: list[tuple[bool, str, Callable[[str], str]]] = [
        (spec.strip_terminal, "terminal", _only_if_present(terminal)),
        (spec.nfkc, "nfkc", normalize_unicode),
        (spec.strip_roff, "roff", _only_if_present(roff)),
        (spec.strip_wiki, "wiki", _only_if_present(wiki)),
        (spec.strip_markdown, "markdown", _only_if_present(markdown)),
        (spec.strip_markup, "html", _only_if_present(html)),
        (True, "control", lambda t: _CONTROL.sub("", t)),
        (spec.join_cjk_lines, "cjk_lines", _only_if_present(cjk_lines)),
        (True, "whitespace", _whitespace(spec.max_newlines)),
    ]
    return [(name, fn) for on, name, fn in chosen if on]


def clean_text(text: str, spec: CleanSpec, report: Report | None = None) -> str:
    """The cleaned document; may be empty (the length filter then rejects it)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    for name, fn in steps(spec):
        after = fn(text)
        if report is not None and after != text:
            report.add("clean_docs", name)
            report.add("clean_chars_removed", name, max(0, len(text) - len(after)))
        text = after
    return text


def dedup_key(text: str) -> str:
    """The text exact dedup compares: case-folded, whitespace-free (so re-wrapped copies match)."""
    return re.sub(r"\s+", "", text.casefold())
