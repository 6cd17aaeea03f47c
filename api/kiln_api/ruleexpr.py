"""The expression tree of kiln_api.rules: built with :data:`F` and operators, evaluated in Python, printed as CEL.

``F.a.b`` is a field of the object a rule is attached to (snake_case path; CEL prints it camelCase).
Python's ``and``/``or``/``not`` cannot be overloaded, so they are :func:`all_of`, :func:`any_of` and
:func:`not_`; :func:`implies`, :func:`has` and :func:`if_` (CEL's ``?:``) complete the set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kiln_api.specfields import camel

Path = tuple[str, ...]


class Expr:
    """A node of a rule expression; operators build bigger nodes (``==`` too, so no hashing by value)."""

    __hash__ = object.__hash__

    def _bin(self, op: str, other: Any) -> Expr:
        return BinOp(op, self, lit(other))

    def _rbin(self, op: str, other: Any) -> Expr:
        return BinOp(op, lit(other), self)

    def __add__(self, o: Any) -> Expr: return self._bin("+", o)
    def __radd__(self, o: Any) -> Expr: return self._rbin("+", o)
    def __mul__(self, o: Any) -> Expr: return self._bin("*", o)
    def __rmul__(self, o: Any) -> Expr: return self._rbin("*", o)
    def __floordiv__(self, o: Any) -> Expr: return self._bin("/", o)
    def __mod__(self, o: Any) -> Expr: return self._bin("%", o)
    def __lt__(self, o: Any) -> Expr: return self._bin("<", o)
    def __le__(self, o: Any) -> Expr: return self._bin("<=", o)
    def __gt__(self, o: Any) -> Expr: return self._bin(">", o)
    def __ge__(self, o: Any) -> Expr: return self._bin(">=", o)
    def __eq__(self, o: Any) -> Expr: return self._bin("==", o)  # type: ignore[override]
    def __ne__(self, o: Any) -> Expr: return self._bin("!=", o)  # type: ignore[override]

    def __getattr__(self, name: str) -> Expr:
        raise AttributeError(name)

    def __bool__(self) -> bool:
        raise TypeError("rule expressions are not truth values: use all_of/any_of/implies/not_")


class Field(Expr):
    """A field of the object the rule is attached to, by its Python (snake_case) path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __getattr__(self, name: str) -> Field:
        if name.startswith("__"):
            raise AttributeError(name)
        return Field((*self.path, name))


class _Root:
    def __getattr__(self, name: str) -> Field:
        return Field((name,))


F = _Root()
"""``F.a.b`` is the field ``a.b`` of the object a rule is attached to."""


class Lit(Expr):
    def __init__(self, value: Any) -> None:
        self.value = value


class BinOp(Expr):
    def __init__(self, op: str, left: Expr, right: Expr) -> None:
        self.op, self.left, self.right = op, left, right


class Call(Expr):
    """``has``, ``not``, ``and``, ``or`` and the conditional ``if``."""

    def __init__(self, fn: str, *args: Expr) -> None:
        self.fn, self.args = fn, args


def lit(value: Any) -> Expr:
    return value if isinstance(value, Expr) else Lit(value)


def has(field: Field) -> Expr:
    """Whether an optional field is set."""
    return Call("has", field)


def not_(e: Expr) -> Expr:
    return Call("not", e)


def all_of(*es: Expr) -> Expr:
    return Call("and", *es)


def any_of(*es: Expr) -> Expr:
    return Call("or", *es)


def implies(cond: Expr, then: Expr) -> Expr:
    return any_of(not_(cond), then)


def if_(cond: Expr, then: Any, other: Any) -> Expr:
    return Call("if", cond, lit(then), lit(other))


_PY_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b, "*": lambda a, b: a * b, "/": lambda a, b: a // b, "%": lambda a, b: a % b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


def lookup(obj: Any, path: Path) -> Any:
    for name in path:
        if obj is None:
            return None
        obj = getattr(obj, name)
    return obj


def evaluate(e: Expr, obj: Any) -> Any:
    """The value of ``e`` for instance ``obj`` (unset optional fields read as None)."""
    if isinstance(e, Field):
        return lookup(obj, e.path)
    if isinstance(e, Lit):
        return e.value
    if isinstance(e, BinOp):
        return _PY_OPS[e.op](evaluate(e.left, obj), evaluate(e.right, obj))
    assert isinstance(e, Call)
    if e.fn == "has":
        return evaluate(e.args[0], obj) is not None
    if e.fn == "not":
        return not evaluate(e.args[0], obj)
    if e.fn == "and":
        return all(evaluate(a, obj) for a in e.args)
    if e.fn == "or":
        return any(evaluate(a, obj) for a in e.args)
    cond, then, other = e.args
    return evaluate(then, obj) if evaluate(cond, obj) else evaluate(other, obj)


def _cel_lit(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, float):
        return repr(value)  # keeps the ".0": CEL has no implicit int/double comparison everywhere
    return str(int(value))


def cel(e: Expr) -> str:
    """The CEL text of ``e``, with ``self`` the object the rule is attached to."""
    if isinstance(e, Field):
        return "self." + ".".join(camel(p) for p in e.path)
    if isinstance(e, Lit):
        return _cel_lit(e.value)
    if isinstance(e, BinOp):
        return f"({cel(e.left)} {e.op} {cel(e.right)})"
    assert isinstance(e, Call)
    args = [cel(a) for a in e.args]
    if e.fn == "has":
        return f"has({args[0]})"
    if e.fn == "not":
        return f"!{args[0]}"
    if e.fn in ("and", "or"):
        return "(" + (" && " if e.fn == "and" else " || ").join(args) + ")"
    return f"({args[0]} ? {args[1]} : {args[2]})"


def field_refs(e: Expr, protected: frozenset[Path] = frozenset()) -> Iterator[tuple[Field, bool]]:
    """Every field in ``e`` with whether it is protected: under ``has()``, or in ``has(f) ? f : ...``."""
    if isinstance(e, Field):
        yield e, e.path in protected
    elif isinstance(e, BinOp):
        yield from field_refs(e.left, protected)
        yield from field_refs(e.right, protected)
    elif isinstance(e, Call) and e.fn == "has":
        field = e.args[0]
        assert isinstance(field, Field)
        yield field, True
    elif isinstance(e, Call) and e.fn == "if" and isinstance(e.args[0], Call) and e.args[0].fn == "has":
        cond, then, other = e.args
        assert isinstance(cond, Call)
        guarded = cond.args[0]
        assert isinstance(guarded, Field)
        yield from field_refs(cond, protected)
        yield from field_refs(then, protected | {guarded.path})
        yield from field_refs(other, protected)
    elif isinstance(e, Call):
        for a in e.args:
            yield from field_refs(a, protected)


def substitute(e: Expr, mapping: Mapping[Path, Expr]) -> Expr:
    """``e`` with each field whose path is in ``mapping`` replaced by the mapped expression."""
    if isinstance(e, Field):
        for i in range(len(e.path), 0, -1):  # the longest mapped prefix wins
            if e.path[:i] in mapping:
                head = mapping[e.path[:i]]
                return Field((*head.path, *e.path[i:])) if isinstance(head, Field) else head
        return e
    if isinstance(e, BinOp):
        return _fold(BinOp(e.op, substitute(e.left, mapping), substitute(e.right, mapping)))
    if isinstance(e, Call):
        return _fold(Call(e.fn, *(substitute(a, mapping) for a in e.args)))
    return e


def _fold(e: BinOp | Call) -> Expr:
    """Constant-fold a node whose operands became literals (a projection fixing a field's value)."""
    if isinstance(e, BinOp):
        if isinstance(e.left, Lit) and isinstance(e.right, Lit):
            return Lit(_PY_OPS[e.op](e.left.value, e.right.value))
        return e
    if e.fn in ("and", "or"):
        absorbing = e.fn == "or"  # True absorbs an or, False absorbs an and
        if any(isinstance(a, Lit) and bool(a.value) is absorbing for a in e.args):
            return Lit(absorbing)
        rest = [a for a in e.args if not isinstance(a, Lit)]
        return rest[0] if len(rest) == 1 else Call(e.fn, *rest) if rest else Lit(not absorbing)
    if e.fn == "not" and isinstance(e.args[0], Lit):
        return Lit(not e.args[0].value)
    return e
