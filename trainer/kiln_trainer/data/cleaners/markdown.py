"""Markdown: keep the words a reader sees, drop the syntax around them.

A document counts as Markdown when it shows at least two different kinds of Markdown syntax (ATX
headings between blank lines, links or images with a path-like target, ``**strong**`` on one line,
tables, setext underlines), or a fenced code block: one kind alone is too weak, and each kind is
narrowed so that code does not show it (a Python comment starts with ``#``, ``f[0](x)`` looks like a
link, ``**kwargs`` and ``__init__`` look like emphasis). Then:

- headings ``## Title`` / setext underlines → ``Title`` on its own line; rules (``---``) go;
- ``**strong**``, ``__strong__``, ``*em*``, ``_em_``, ``~~del~~``, ``` `code` ``` → their text
  (``_`` only at word edges, so ``snake_case`` stays; ``*`` also inside words, as in CommonMark);
- links ``[text](url)``, ``[text][ref]`` → ``text``; autolinks ``<https://…>`` → the URL;
  images ``![alt](src)`` go whole; reference definitions ``[ref]: url`` go;
- fenced code: the fence lines go, the code stays verbatim (no emphasis rules inside);
- tables: the ``|---|`` separator row goes, each row becomes its cells separated by two spaces;
- ``> `` quote markers go; ``* item`` / ``+ item`` bullets become ``- item``; ``\\*`` escapes resolve.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")
_SIGNALS = {
    # a heading between blank lines: a `# comment` in code sits next to code, not blank lines
    "heading": re.compile(r"(?:\A|\n[ \t]*\n)#{1,6}[ \t]+\S[^\n]*\n[ \t]*(?:\n|\Z)"),
    # a link target has a slash, dot or hash: `fns[0](logits)` in code is not a link
    "link": re.compile(r"!?\[[^\]\n]+\]\([^)\s]*[/.#][^)\s]*(?:\s+\"[^\"\n]*\")?\)"),
    # `**` around words on one line; `**kwargs` and `__init__` are not emphasis
    "strong": re.compile(r"\*\*[^*\s](?:[^*\n]*[^*\s])?\*\*"),
    "table": re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)+\|?\s*$", re.M),
    "setext": re.compile(r"^[^\n#>|-].*\n(?:={3,}|-{3,})[ \t]*$", re.M),
}

# a substring each signal needs: most documents have none, and `in` is far cheaper than a search
_NEEDLES = {"heading": ("#",), "link": ("](",), "strong": ("**",), "table": ("---",), "setext": ("===", "---")}
_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)|!\[[^\]\n]*\]\[[^\]\n]*\]")
_LINK = re.compile(r"\[([^\]\n]+)\]\([^)\n]*\)|\[([^\]\n]+)\]\[[^\]\n]*\]")
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto):[^>\s]+)>")
_REFDEF = re.compile(r"^[ ]{0,3}\[[^\]\n]+\]:[ \t]+\S+.*$")
_HEADING = re.compile(r"^[ ]{0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_RULE = re.compile(r"^[ ]{0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,}|={3,})$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$")
_QUOTE = re.compile(r"^[ ]{0,3}(?:>[ ]?)+")
_BULLET = re.compile(r"^([ \t]*)[*+][ \t]+")
_EMPHASIS = [
    re.compile(r"\*\*(\S(?:.*?\S)?)\*\*"), re.compile(r"(?<!\w)__(\S(?:.*?\S)?)__(?!\w)"),
    re.compile(r"~~(\S(?:.*?\S)?)~~"), re.compile(r"(?<!\*)\*(\S(?:[^*\n]*?\S)?)\*(?!\*)"),  # `*` works inside words too
    re.compile(r"(?<!\w)_(\S(?:[^_\n]*?\S)?)_(?!\w)"),
]
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])")


def looks_like(text: str) -> bool:
    """Two kinds of Markdown syntax, or a fenced code block."""
    if ("```" in text or "~~~" in text) and len(re.findall(r"^[ ]{0,3}(?:```|~~~)", text, re.M)) >= 2:
        return True
    return sum(1 for name, rx in _SIGNALS.items()
               if any(n in text for n in _NEEDLES[name]) and rx.search(text)) >= 2


def _inline(line: str) -> str:
    line = _IMAGE.sub("", line)
    line = _LINK.sub(lambda m: m.group(1) or m.group(2), line)
    line = _AUTOLINK.sub(r"\1", line)
    spans: list[str] = []

    def keep_code(m: re.Match[str]) -> str:  # code spans are verbatim: no emphasis rules inside
        spans.append(m.group(2).strip())
        return f"\x00{len(spans) - 1}\x00"

    line = _CODE_SPAN.sub(keep_code, line)
    for rx in _EMPHASIS:
        line = rx.sub(r"\1", line)
    line = _ESCAPED.sub(r"\1", line)
    return re.sub(r"\x00(\d+)\x00", lambda m: spans[int(m.group(1))], line)


def _table_row(line: str) -> str:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    return "  ".join(_inline(c) for c in cells if c)


def strip(text: str) -> str:
    """The Markdown document as plain text (see the module doc)."""
    out: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            else:
                out.append(line)
            continue
        if m:
            fence = m.group(1)
            continue
        if _REFDEF.match(line) or _RULE.match(line) or _TABLE_SEP.match(line) and "-" in line:
            continue
        line = _QUOTE.sub("", line)
        heading = _HEADING.match(line)
        if heading:
            out.append(_inline(heading.group(1)))
            continue
        if line.lstrip().startswith("|") and line.rstrip().endswith("|"):
            out.append(_table_row(line))
            continue
        out.append(_inline(_BULLET.sub(r"\1- ", line)))
    return "\n".join(out)
