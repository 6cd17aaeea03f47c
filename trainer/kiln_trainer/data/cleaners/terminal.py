"""Terminal output: ECMA-48 escape and control sequences, overstrike, and sequences that lost their ESC.

Text copied from a terminal or a log keeps what the program sent to colour it. Removing only the
control character ESC (as a generic control-character filter does) leaves ``[33m`` and ``[m`` in
the training text, and the served model learns to write them. So every sequence goes whole:

- CSI ``ESC [`` (or the 8-bit ``0x9B``) parameters, intermediates, final byte: colours (SGR), cursor;
- control strings ``ESC ]`` OSC (titles, OSC 8 hyperlinks), ``ESC P`` DCS, ``ESC X`` SOS, ``ESC ^`` PM,
  ``ESC _`` APC (or 8-bit 0x9D, 0x90, 0x98, 0x9E, 0x9F) up to their terminator ST (``ESC \\`` or
  0x9C) or BEL; an unterminated one ends at the line end, so it never eats a whole document;
- nF escapes (``ESC ( B`` character sets) and the two-byte Fp/Fe/Fs escapes (``ESC 7``, ``ESC M``);
- overstrike from ``man | cat`` or ``nroff``: ``N\\bN`` (bold) and ``_\\bx`` (underline) keep one
  character, as a printer would show;
- SGR remnants whose ESC was already lost upstream: ``[1;31m``, ``[0m`` always (a bracketed number
  list ending in ``m`` right before a word is not prose), and the bare ``[m`` / ``[K`` resets only
  in a document that has such numbered remnants, because ``[m`` alone also occurs in normal text.

The single C1 controls (0x80-0x9F) left after this are dropped by the generic control filter.
"""

from __future__ import annotations

import re

_ST = r"(?:\x1b\\|\x9c|\x07)"
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"  # CSI
    rf"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])(?:[^\x07\x1b\x9c\n]|\x1b(?!\\))*(?:{_ST}|(?=\n)|\Z)"  # strings
    r"|\x1b[\x20-\x2f]+[\x30-\x7e]"  # nF
    r"|\x1b[\x30-\x7e]"  # Fp, Fe, Fs
)
_OVERSTRIKE = re.compile(r"[^\x08\n]\x08+")
_REMNANT = re.compile(r"\[\d{1,3}(?:;\d{1,3})*m(?!\])")
_BARE_RESET = re.compile(r"\[[mK]")


def looks_like(text: str) -> bool:
    """Any ESC, 8-bit CSI/string introducer, backspace or ESC-less SGR remnant."""
    return (any(c in text for c in "\x1b\x9b\x9d\x90\x98\x9e\x9f\x08")
            or ("m" in text and _REMNANT.search(text) is not None))


def strip(text: str) -> str:
    """The text without terminal sequences (see the module doc for what counts)."""
    if "\x1b" in text or any(c in text for c in "\x9b\x9d\x90\x98\x9e\x9f"):
        text = _SEQUENCE.sub("", text)
    if "\x08" in text:
        text = _OVERSTRIKE.sub("", text)
    if "[" in text:
        text, found = _REMNANT.subn("", text)
        if found:
            text = _BARE_RESET.sub("", text)
    return text
