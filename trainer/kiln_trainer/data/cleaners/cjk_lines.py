"""Line breaks inside Chinese (and Japanese) sentences: hard wrapping at a fixed width is not a paragraph.

Text wrapped by ``fold``, ``textwrap`` or an editor at N columns breaks sentences at arbitrary
characters. A break is joined (removed, with nothing in its place, as CJK writing uses no spaces)
when the characters on both sides are CJK and at least one of them is an ideograph or kana: two
ideographs, or an ideograph and CJK punctuation (。，、！？“” 《》 …). What stays a break:

- an empty line (a paragraph) and a line that starts with white space (an indented paragraph, the
  usual layout of Chinese prose: two ideographic spaces);
- a break with a Latin letter, digit or ASCII punctuation on either side: English lines and code keep
  their line breaks (a wrapped English sentence is still read correctly, a joined list or poem is not),
  and for mixed lines the side that is not CJK cannot tell a wrap from a list item;
- a break between two punctuation marks (lists of quotations).
Hangul is not included: Korean separates words with spaces, so its wraps replaced a space.
"""

from __future__ import annotations

import re

_IDEO = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_PUNCT = "\u3001-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65\u2014\u2018\u2019\u201c\u201d\u2026\u00b7"
_CJK_BREAK = re.compile(
    rf"(?:(?<=[{_IDEO}])[^\S\n]*\n(?=[{_IDEO}{_PUNCT}])"
    rf"|(?<=[{_PUNCT}])[^\S\n]*\n(?=[{_IDEO}]))"
)
_ENDS_CJK = re.compile(rf"[{_IDEO}{_PUNCT}]$")
_STARTS_CJK = re.compile(rf"^[{_IDEO}{_PUNCT}]")


def looks_like(text: str) -> bool:
    return "\n" in text  # searching first would cost as much as the substitution itself


def strip(text: str) -> str:
    """The text with the breaks inside CJK sentences removed."""
    return _CJK_BREAK.sub("", text)


def join_fragments(left: str, right: str) -> str:
    """Two pieces of one filled paragraph: nothing between CJK, one space otherwise."""
    if _ENDS_CJK.search(left) and _STARTS_CJK.match(right):
        return left + right
    return left + " " + right
