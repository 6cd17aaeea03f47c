"""Kubernetes ``$(VAR)`` expansion, as the kubelet applies it to env values, command and args.

Rules (same as k8s.io/kubernetes third_party/forked/golang/expansion):
``$(NAME)`` becomes the value of NAME when NAME is defined, and stays literally when it is not;
``$$`` becomes a single ``$`` (so ``$$(NAME)`` yields the literal ``$(NAME)``); any other ``$`` stays.
"""

from __future__ import annotations

from collections.abc import Mapping


def expand(text: str, env: Mapping[str, str]) -> str:
    """Return ``text`` with every defined ``$(VAR)`` replaced by ``env[VAR]``."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                # An unterminated reference is kept as written, like the kubelet does.
                out.append(text[i:])
                break
            name = text[i + 2 : close]
            out.append(env[name] if name in env else text[i : close + 1])
            i = close + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)
