"""roff/man source (man pages, ``.TH``/``.SH`` documents): keep what groff would print, drop the markup.

A document counts as roff when at least two lines are requests of the man/mdoc macro sets or it
uses two font escapes (``\\fB``). Then, as groff does in fill mode, consecutive text lines join into one
paragraph (with a space, or with nothing where both sides are CJK), and these become paragraph breaks:
``.PP .LP .P .TP .IP .HP .sp .SH .SS``. What each request leaves:

- ``.SH``/``.SS``: the heading text as its own paragraph; ``.B .I .SM .SB``: their words;
  ``.BR .IR .BI .IB .RB .RI``: their arguments joined without spaces (``.BR ls (1)`` → ``ls(1)``);
  ``.IP tag``: the tag; mdoc ``.Nm .Nd .Ar .Pa .Sh .Ss``: their words (``.Fl x`` → ``-x``);
- every other request (``.TH``, ``.br``, ``.nf``, ``.RS``, ``.UR``, conditionals, ...) disappears;
  ``.de``/``.ig`` blocks up to ``..`` disappear whole; ``.\\"`` lines are comments;
- escapes: fonts ``\\fB \\fI \\fR \\fP \\f(XX \\f[X]``, sizes ``\\s+1``, ``\\&``, ``\\|``, ``\\c``,
  strings/registers ``\\*(xx \\n(xx`` go; ``\\-`` is ``-``, ``\\e`` and ``\\\\`` are ``\\``, specials
  ``\\(em \\[em]`` become their character (unknown names go), ``\\"`` starts a comment.
A line ending in ``\\c`` continues into the next without a space. Lines inside ``.nf`` … ``.fi``
(or ``.EX`` … ``.EE``) keep their breaks, as groff keeps them.
"""

from __future__ import annotations

import re

from kiln_trainer.data.cleaners.cjk_lines import join_fragments

_FONT = re.compile(r"\\f[BIRPC(\[]")
# a request name ends at a blank or the line end: `'B'` at a line start is a quoted letter
_REQUEST = re.compile(r"^[.'][ \t]*([A-Za-z][A-Za-z0-9]?)(?=[ \t]|$)", re.M)
_MAN_MACROS = {"TH", "SH", "SS", "TP", "PP", "LP", "IP", "HP", "B", "I", "BR", "BI", "IB", "IR", "RB", "RI",
               "SM", "SB", "br", "sp", "nf", "fi", "RS", "RE", "EX", "EE", "UR", "UE", "Dd", "Dt", "Os",
               "Sh", "Nm", "Nd", "Pp", "Fl", "Ar", "TQ", "ft", "ad", "na", "in"}
_BREAKS = {"PP", "LP", "P", "TP", "IP", "HP", "sp", "SH", "SS", "Sh", "Ss", "Pp", "TQ"}
_WORDS = {"SH", "SS", "B", "I", "SM", "SB", "Sh", "Ss", "Nm", "Nd", "Ar", "Pa", "Em", "Sy", "Li", "Dv", "Ev",
          "Cm", "Va", "Xr", "It", "OP", "SY", "MT"}
_ALTERNATING = {"BR", "BI", "IB", "IR", "RB", "RI"}
_NOFILL_ON, _NOFILL_OFF = {"nf", "EX"}, {"fi", "EE"}
_SPECIALS = {
    "em": "—", "en": "–", "hy": "-", "mi": "−", "bu": "•", "co": "©", "rg": "®", "tm": "™", "aq": "'",
    "dq": '"', "lq": "“", "rq": "”", "oq": "‘", "cq": "’", "de": "°", "mu": "×", "di": "÷", "->": "→",
    "<-": "←", ">=": "≥", "<=": "≤", "!=": "≠", "+-": "±", "ba": "|", "rs": "\\", "ti": "~", "ha": "^",
    "ga": "`", "sl": "/", "lA": "⇐", "rA": "⇒", "ua": "↑", "da": "↓", "ss": "ß", "Do": "$", "Eu": "€",
    "ps": "¶", "sc": "§", "R": "®", "Tm": "™",
}
_ESCAPE = re.compile(
    r"\\(?:"
    r"[\"#].*"  # comment to the end of the line
    r"|[fFmM](?:\[[^\]\n]*\]|\([^\n]{2}|[^\n])"  # font, colour
    r"|s(?:[+-]?\d{1,2}|\([+-]?\d\d|\[[^\]\n]*\])"  # size
    r"|[*nkgV](?:\[[^\]\n]*\]|\([^\n]{2}|[^\n])"  # string, register, ...
    r"|\([^\n]{2}|\[[^\]\n]*\]"  # special character
    r"|[hvwlLoXZxDbNRSABCY]'[^'\n]*'"  # escapes with a quoted argument
    r"|\$[\d*@]"  # macro arguments
    r"|[^\n]"  # single-character escapes
    r"|$)", re.M)
_GLUE = "\x01"  # marks a piece that ended in `\c`: the next one continues it without a space
_SINGLE = {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", ".": ".", "`": "`", "'": "´", "t": "\t"}


def looks_like(text: str) -> bool:
    """Two or more man/mdoc request lines, or two font escapes (one `\\f` is often a form feed)."""
    if "\\f" in text and len(_FONT.findall(text)) >= 2:
        return True
    hits = 0
    for m in _REQUEST.finditer(text):
        if m.group(1) in _MAN_MACROS:
            hits += 1
            if hits >= 2:
                return True
    return False


def _escape(m: re.Match[str]) -> str:
    body = m.group(0)[1:]
    if body[:1] == "(":
        return _SPECIALS.get(body[1:], "")
    if body[:1] == "[":
        return _special(body[1:-1])
    if body[:1] == "*" and len(body) > 1:
        name = body[2:-1] if body[1] == "[" else body[2:] if body[1] == "(" else body[1:]
        return {"R": "®", "Tm": "™", "lq": "“", "rq": "”"}.get(name, "")
    return _SINGLE.get(body, "") if len(body) == 1 else ""


def _special(name: str) -> str:
    if re.fullmatch(r"u[0-9A-F]{4,6}", name):
        return chr(int(name[1:], 16))
    return _SPECIALS.get(name, "")


def text_of(line: str) -> str:
    """A text line or argument with its escapes resolved."""
    return _ESCAPE.sub(_escape, line)


def _args(rest: str) -> list[str]:
    """Request arguments: blank-separated, double quotes group words ("" inside is a quote)."""
    out: list[str] = []
    for m in re.finditer(r'"((?:[^"]|"")*)"?|(\S+)', rest):
        out.append(m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2))
    return out


def _request_text(name: str, rest: str) -> str | None:
    """What a request line leaves in the text, or None when it leaves nothing."""
    rest = re.sub(r'\\".*', "", rest)  # a comment ends the arguments
    args = [text_of(a) for a in _args(rest)]
    if name in _ALTERNATING:
        return "".join(args)
    if name in _WORDS:
        return " ".join(args)
    if name == "IP":
        return args[0] if args else None
    if name == "Fl":
        return " ".join("-" + a for a in args)
    return None


def strip(text: str) -> str:
    """Plain text as groff lays it out, one paragraph per line (see the module doc)."""
    paragraphs: list[list[str]] = [[]]
    nofill = False
    skip_until_dots = False

    def new_paragraph() -> None:
        if paragraphs[-1]:
            paragraphs.append([])

    for line in text.split("\n"):
        if skip_until_dots:
            skip_until_dots = line.strip() != ".."
            continue
        m = re.match(r"^[.'][ \t]*(\S*)[ \t]*(.*)$", line)
        if m is None:
            piece = text_of(line)
            if nofill:
                paragraphs[-1].append(piece)
                paragraphs[-1].append("\n")
            elif piece.strip():
                paragraphs[-1].append(piece.strip() + (_GLUE if line.rstrip().endswith("\\c") else ""))
            elif line == "":
                new_paragraph()  # a blank line is a paragraph break in groff too
            continue
        name, rest = m.group(1), m.group(2)
        if name.startswith('\\"') or name == "" or name.startswith("\\#"):
            continue
        if name in {"de", "de1", "ig", "am"}:
            skip_until_dots = True  # a macro definition or ignored block, up to ".."
            continue
        if name in _NOFILL_ON or name in _NOFILL_OFF:
            nofill = name in _NOFILL_ON
            new_paragraph()
            continue
        if name in _BREAKS:
            new_paragraph()
        words = _request_text(name, rest)
        if words:
            paragraphs[-1].append(words + (_GLUE if rest.rstrip().endswith("\\c") else ""))
            if name in {"SH", "SS", "Sh", "Ss"}:
                new_paragraph()
    return "\n\n".join(_flow(p) for p in paragraphs if p).strip("\n")


def _flow(pieces: list[str]) -> str:
    """One paragraph: fill-mode pieces joined like groff fills them; no-fill pieces keep their breaks."""
    out = ""
    for p in pieces:
        if p == "\n":
            out = out.rstrip(" ") + "\n"
        elif out.endswith(("\n", _GLUE)) or not out:
            out = out.removesuffix(_GLUE) + p
        else:
            out = join_fragments(out, p)
    return out.replace(_GLUE, "").strip()
