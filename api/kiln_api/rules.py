"""Cross-field rules, each declared once, rendered both as a CEL rule and as a Python check.

A rule is an expression over the fields of one dataclass, written with :data:`F`
(``F.global_batch_size % (F.micro_batch_size * F.world_size) == 0``), plus the field it is
reported on and a message. The same expression tree

* evaluates in Python against an instance (:func:`check_rules`, :func:`violations`), and
* renders as CEL for the CRD (``x-kubernetes-validations``, see ``crd.py``).

A rule declared on a trainer config type can be *projected* onto a spec type with a map from the
rule's field names to expressions over the spec type (:meth:`Rule.onto`): the batch rule is declared
once over (global, micro, world) and appears on ``TrainingSpec`` with world = nodes × devices per
node. So the CRD, the spec parser, the compiler and DeepSpeed's config all run one declaration.

Fields that may be unset (``X | None``) guard the rule: an unset field skips it (CEL: ``has()``).
The compiler re-checks the spec after filling those fields from the preset, so nothing escapes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kiln_api.specfields import SpecError, camel, hints, unwrap_optional

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


def _lookup(obj: Any, path: Path) -> Any:
    for name in path:
        if obj is None:
            return None
        obj = getattr(obj, name)
    return obj


def evaluate(e: Expr, obj: Any) -> Any:
    """The value of ``e`` for instance ``obj`` (unset optional fields read as None)."""
    if isinstance(e, Field):
        return _lookup(obj, e.path)
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


def _fields(e: Expr, protected: frozenset[Path] = frozenset()) -> Iterator[tuple[Field, bool]]:
    """Every field in ``e`` with whether it is protected: under ``has()``, or in ``has(f) ? f : ...``."""
    if isinstance(e, Field):
        yield e, e.path in protected
    elif isinstance(e, BinOp):
        yield from _fields(e.left, protected)
        yield from _fields(e.right, protected)
    elif isinstance(e, Call) and e.fn == "has":
        field = e.args[0]
        assert isinstance(field, Field)
        yield field, True
    elif isinstance(e, Call) and e.fn == "if" and isinstance(e.args[0], Call) and e.args[0].fn == "has":
        cond, then, other = e.args
        assert isinstance(cond, Call)
        guarded = cond.args[0]
        assert isinstance(guarded, Field)
        yield from _fields(cond, protected)
        yield from _fields(then, protected | {guarded.path})
        yield from _fields(other, protected)
    elif isinstance(e, Call):
        for a in e.args:
            yield from _fields(a, protected)


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


def _optional_prefixes(cls: type, path: Path) -> list[Path]:
    """The prefixes of ``path`` (in ``cls``) whose field may be unset."""
    out: list[Path] = []
    tp: Any = cls
    for i, name in enumerate(path):
        if not (dataclasses.is_dataclass(tp) and isinstance(tp, type)):
            break
        inner, nullable = unwrap_optional(hints(tp)[name])
        if nullable:
            out.append(path[: i + 1])
        tp = inner
    return out


_PLACEHOLDER = re.compile(r"\{([a-z0-9_.]+)\}")


@dataclasses.dataclass(frozen=True, eq=False)
class Rule:
    """One cross-field rule: ``check`` must hold; ``field`` is the path it is reported on.

    ``message`` may name the rule's fields as ``{name}``: Python errors show ``name=value``, the
    CRD's static message shows the name, both spelled as the type the rule is attached to spells them.
    """

    check: Expr
    """The condition, over the fields of the type it is declared on."""
    field: str
    """Dotted snake_case path (relative to that type) named in errors and in the CEL fieldPath."""
    message: str
    """What is wrong, without the reported field's path (it is prefixed)."""
    origin: Rule | None = None
    """The declaration this rule was projected from (None for a declaration)."""
    mapping: Mapping[Path, Expr] = dataclasses.field(default_factory=dict)
    """For a projection: the declaration's field paths → expressions over this type."""

    def onto(self, mapping: Mapping[str, Expr], field: Field | None = None) -> Rule:
        """This declaration over another type: ``mapping`` maps its dotted field names to that type's;
        ``field`` names the reported field there when the declared one maps to an expression."""
        if self.origin is not None:
            raise TypeError("project the declaration, not a projection")
        paths = {tuple(k.split(".")): v for k, v in mapping.items()}
        target = field if field is not None else substitute(Field(tuple(self.field.split("."))), paths)
        if not isinstance(target, Field):
            raise TypeError(f"rule field {self.field} maps to an expression: name the reported field")
        return Rule(substitute(self.check, paths), ".".join(target.path), self.message, self, paths)

    @property
    def declaration(self) -> Rule:
        return self.origin or self

    def guards(self, cls: type) -> list[Path]:
        """Optional fields the rule reads outside ``has()``: unset, the rule is skipped."""
        seen: dict[Path, None] = {}
        for f, only_has in _fields(self.check):
            if not only_has:
                for prefix in _optional_prefixes(cls, f.path):
                    seen.setdefault(prefix)
        return list(seen)

    def holds(self, obj: Any) -> bool:
        if any(_lookup(obj, p) is None for p in self.guards(type(obj))):
            return True
        return bool(evaluate(self.check, obj))

    def _display(self, name: str, json_names: bool) -> str:
        e = substitute(Field(tuple(name.split("."))), self.mapping)
        parts = e.path if isinstance(e, Field) else tuple(name.split("."))
        return ".".join(camel(p) for p in parts) if json_names else ".".join(parts)

    def explain(self, obj: Any, json_names: bool) -> str:
        """The message with each ``{name}`` as ``name=value`` for ``obj``."""
        def value(m: re.Match[str]) -> str:
            name = m.group(1)
            got = evaluate(substitute(Field(tuple(name.split("."))), self.mapping), obj)
            return f"{self._display(name, json_names)}={got}"
        return _PLACEHOLDER.sub(value, self.message)

    def reported(self, json_names: bool) -> str:
        return ".".join(camel(p) for p in self.field.split(".")) if json_names else self.field

    def cel_rule(self, cls: type, where: str) -> dict[str, str]:
        """The CRD validation at ``cls``, found at dotted JSON path ``where`` (e.g. spec.training)."""
        rule = cel(self.check)
        guards = [f"has({cel(Field(p))})" for p in self.guards(cls)]
        if guards:
            rule = f"!({' && '.join(guards)}) || {rule}"
        message = _PLACEHOLDER.sub(lambda m: self._display(m.group(1), True), self.message)
        return {"rule": rule, "message": f"{where}.{self.reported(True)}: {message}",
                "fieldPath": "." + self.reported(True)}


def rules_of(cls: type) -> tuple[Rule, ...]:
    """The rules declared on (or projected onto) ``cls`` as its ``RULES`` class variable."""
    found = cls.__dict__.get("RULES", ())
    # A projection can make a rule always true (a custom shape is never arch 'classic'): leave it out.
    return tuple(r for r in found if not (isinstance(r.check, Lit) and r.check.value is True))


def violations(obj: Any) -> list[Rule]:
    return [r for r in rules_of(type(obj)) if not r.holds(obj)]


def check_rules(obj: Any, path: str = "", *, json_names: bool = False) -> None:
    """Raise SpecError for the first rule ``obj`` breaks, naming its field under ``path``."""
    for rule in violations(obj):
        name = rule.reported(json_names)
        raise SpecError(f"{path}.{name}" if path else name, rule.explain(obj, json_names))


def check_tree(obj: Any, path: str) -> None:
    """check_rules on ``obj`` and every dataclass below it (JSON names, as in the CRD)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        check_rules(obj, path, json_names=True)
        for f in dataclasses.fields(obj):
            check_tree(getattr(obj, f.name), f"{path}.{camel(f.name)}")
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            check_tree(item, f"{path}[{i}]")


def declared_rules(*modules: Any) -> list[Rule]:
    """Every rule declaration (not projection) found on the dataclasses of ``modules``."""
    out: list[Rule] = []
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, type) and dataclasses.is_dataclass(value):
                out.extend(r for r in rules_of(value) if r.origin is None)
    return out


__all__ = ["F", "Rule", "all_of", "any_of", "cel", "lit", "check_rules", "check_tree", "has", "if_", "implies", "not_",
           "rules_of"]
