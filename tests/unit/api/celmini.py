"""A small evaluator for the CEL subset the generated CRD uses, written independently of kiln_api.rules.

It lets a unit test run the CRD's rules on a spec the way the API server would, and compare the verdict
with the Python checks generated from the same declarations. Supported: int/double/string/bool
literals, ``self.a.b``, ``has()``, ``!``, ``* / %``, ``+ -``, comparisons, ``&& ||`` and ``?:``.
A missing field is an evaluation error, as in CEL ("no such key").
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r"\s*(\d+\.\d+(?:e[-+]?\d+)?|\d+|'(?:[^'\\]|\\.)*'|&&|\|\||==|!=|<=|>=|[A-Za-z_]\w*|\S)")


class NoSuchKey(Exception):
    pass


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m, text[pos:]
        out.append(m.group(1))
        pos = m.end()
    return out


_BINARY = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 4, "<=": 4, ">": 4, ">=": 4, "+": 5, "-": 5,
           "*": 6, "/": 6, "%": 6}


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks, self.i = _tokens(text), 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        tok = self.toks[self.i]
        assert want is None or tok == want, f"expected {want}, got {tok}"
        self.i += 1
        return tok

    def expr(self) -> Any:
        cond = self.binary(1)
        if self.peek() == "?":
            self.take("?")
            then = self.expr()
            self.take(":")
            return ("?", cond, then, self.expr())
        return cond

    def binary(self, level: int) -> Any:
        left = self.unary()
        while (op := self.peek()) in _BINARY and _BINARY[op] >= level:
            self.take()
            left = (op, left, self.binary(_BINARY[op] + 1))
        return left

    def unary(self) -> Any:
        if self.peek() == "!":
            self.take()
            return ("!", self.unary())
        return self.atom()

    def atom(self) -> Any:
        tok = self.take()
        if tok == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if tok == "has":
            self.take("(")
            path = self.path(self.take())
            self.take(")")
            return ("has", path)
        if tok in ("self", "oldSelf"):
            return ("get", self.path(tok))
        if tok in ("true", "false"):
            return ("lit", tok == "true")
        if tok.startswith("'"):
            return ("lit", tok[1:-1].replace("\\'", "'"))
        return ("lit", float(tok) if "." in tok else int(tok))

    def path(self, root: str) -> list[str]:
        assert root == "self", root
        names = []
        while self.peek() == ".":
            self.take(".")
            names.append(self.take())
        return names


def _get(obj: Any, names: list[str]) -> Any:
    for name in names:
        if not isinstance(obj, dict) or name not in obj:
            raise NoSuchKey(".".join(names))
        obj = obj[name]
    return obj


def _eval(node: Any, obj: Any) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "get":
        return _get(obj, node[1])
    if kind == "has":
        try:
            _get(obj, node[1])
        except NoSuchKey:
            return False
        return True
    if kind == "!":
        return not _eval(node[1], obj)
    if kind == "?":
        return _eval(node[2], obj) if _eval(node[1], obj) else _eval(node[3], obj)
    if kind == "&&":
        return _eval(node[1], obj) and _eval(node[2], obj)
    if kind == "||":
        return _eval(node[1], obj) or _eval(node[2], obj)
    a, b = _eval(node[1], obj), _eval(node[2], obj)
    if kind in ("<", "<=", ">", ">=") and isinstance(a, int) != isinstance(b, int):
        raise TypeError(f"no matching overload for {kind} on {a!r}, {b!r}")  # CEL does not mix int and double
    ops = {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}
    if kind in ops:
        return ops[kind]
    return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
            "/": lambda: int(a / b) if isinstance(a, int) else a / b, "%": lambda: a % b}[kind]()


def evaluate(rule: str, obj: Any) -> bool:
    """The verdict of CEL ``rule`` with ``self`` = ``obj`` (a dict as the API server stores it)."""
    parser = _Parser(rule)
    tree = parser.expr()
    assert parser.peek() is None, f"trailing tokens in {rule}"
    return bool(_eval(tree, obj))
