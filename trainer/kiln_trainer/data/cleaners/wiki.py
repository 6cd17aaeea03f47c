"""MediaWiki markup (Wikipedia dumps and their copies): the article's words without the wikitext.

A document counts as wikitext when it shows two different kinds of wiki syntax: ``[[link]]``
(with a letter, no quotes or commas: ``[[1, 2], [3, 4]]`` is a Python list), ``{{template|…}}`` (a
name and a pipe, or a capitalised name: ``'{{}}'.format`` is Python), bold in three quotes with
text right after it (a one-line Python docstring ends its line),
``== heading ==`` lines, ``<ref>``. Then:

- ``{{templates}}`` go whole, nested ones too (infoboxes, citations, navboxes: no prose in them);
- ``<ref>…</ref>`` footnotes go with their content, ``<!-- comments -->`` too;
- ``[[target]]`` → ``target``, ``[[target|text]]`` → ``text``; links to files, images and
  categories (``[[File:…]]``, ``[[Category:…]]``, ``[[文件:…]]``, ``[[分类:…]]``) go whole;
  external ``[https://x text]`` → ``text``, bare ``[https://x]`` goes;
- ``'''bold'''`` and ``''italic''`` → their text; ``== Heading ==`` → ``Heading``;
- tables ``{| … |}``: the markup lines go, each cell keeps its text (after its ``style=… |``);
- list markers ``* # : ;`` at line starts and magic words (``__TOC__``) go.
"""

from __future__ import annotations

import re

_SIGNALS = (
    re.compile(r"\[\[[^\[\]\n,'\"]*[^\W\d_][^\[\]\n,'\"]*\]\]"),
    re.compile(r"\{\{[^\W\d_][^{}\n|]*\||\{\{[A-Z][^{}\n]*\}\}"),
    re.compile(r"'''[^'\n]+'''(?=[^\s'])"),  # text goes on after bold; a '''docstring''' ends a line
    re.compile(r"^={2,6}[ \t]*[^=\n]+?[ \t]*={2,6}[ \t]*$", re.M),
    re.compile(r"<ref[ >]"),
)
_NEEDLES = ("[[", "{{", "'''", "==", "<ref")
_TEMPLATE = re.compile(r"\{\{(?:[^{}]|\{(?!\{)|\}(?!\}))*\}\}")
_REF = re.compile(r"<ref\b[^>/]*/>|<ref\b[^>]*>.*?</ref\s*>|<!--.*?-->", re.S | re.I)
_MEDIA = re.compile(r"\[\[(?:File|Image|Category|Media|文件|檔案|图像|圖像|分类|分類|Datei|Kategorie):"
                    r"(?:[^\[\]]|\[\[[^\]]*\]\])*\]\]", re.I)
_LINK = re.compile(r"\[\[(?:[^\]|\n]*\|)?([^\]\n]*)\]\]")
_EXTERNAL = re.compile(r"\[(?:https?|ftp)://[^\s\]]+(?:[ \t]+([^\]\n]*))?\]")
_QUOTES = re.compile(r"'{5}(.+?)'{5}|'''(.+?)'''|''(.+?)''")
_HEADING = re.compile(r"^(={1,6})[ \t]*(.+?)[ \t]*\1[ \t]*$", re.M)
_TABLE_MARKUP = re.compile(r"^[ \t]*(?:\{\||\|\}|\|-|\|\+).*(?:\n|$)", re.M)
_CELL = re.compile(r"^[ \t]*[|!](?!\})(.*)$", re.M)
_LIST = re.compile(r"^[*#:;]+[ \t]*", re.M)
_MAGIC = re.compile(r"__[A-Z]+__")


def looks_like(text: str) -> bool:
    # each signal needs a substring: `in` tests first, most documents have none of them
    return sum(1 for needle, rx in zip(_NEEDLES, _SIGNALS, strict=True) if needle in text and rx.search(text)) >= 2


def _cells(m: re.Match[str]) -> str:
    """One table line: `| a || b` or `! h !! h`, a cell's attributes before its single `|` dropped."""
    cells = re.split(r"\|\||!!", m.group(1))
    texts = [c.split("|", 1)[1] if "|" in c and "=" in c.split("|", 1)[0] else c for c in cells]
    return "  ".join(t.strip() for t in texts if t.strip())


def strip(text: str) -> str:
    """The article text (see the module doc)."""
    text = _REF.sub("", text)
    while True:  # innermost templates first, until none is left
        text, n = _TEMPLATE.subn("", text)
        if not n:
            break
    text = _MEDIA.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EXTERNAL.sub(lambda m: m.group(1) or "", text)
    text = _QUOTES.sub(lambda m: m.group(1) or m.group(2) or m.group(3), text)
    text = _HEADING.sub(r"\2", text)
    text = _TABLE_MARKUP.sub("", text)
    text = _CELL.sub(_cells, text)
    text = _LIST.sub("", text)
    return _MAGIC.sub("", text)
