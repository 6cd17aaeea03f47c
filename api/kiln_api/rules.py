"""Cross-field rules, each declared once, rendered both as a CEL rule and as a Python check.

A rule is an expression over the fields of one dataclass, written with :data:`F`
(``F.d_model % F.n_heads == 0``), plus the field it is reported on and a message. The same expression tree

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
import functools
import re
from collections.abc import Mapping
from typing import Any

from kiln_api.ruleexpr import (
    Expr,
    F,
    Field,
    Lit,
    Path,
    all_of,
    any_of,
    cel,
    evaluate,
    field_refs,
    has,
    if_,
    implies,
    lit,
    lookup,
    not_,
    substitute,
)
from kiln_api.specfields import SpecError, camel, hints, unwrap_optional


@functools.cache  # type hints are resolved from source text: once per (type, path) is plenty
def _optional_prefixes(cls: type, path: Path) -> tuple[Path, ...]:
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
    return tuple(out)


@functools.cache  # per (rule, type): the operator checks every spec on every reconcile
def _guards(rule: Rule, cls: type) -> tuple[Path, ...]:
    seen: dict[Path, None] = {}
    for f, only_has in field_refs(rule.check):
        if not only_has:
            for prefix in _optional_prefixes(cls, f.path):
                seen.setdefault(prefix)
    return tuple(seen)


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

    def guards(self, cls: type) -> tuple[Path, ...]:
        """Optional fields the rule reads outside ``has()``: unset, the rule is skipped."""
        return _guards(self, cls)

    def holds(self, obj: Any) -> bool:
        if any(lookup(obj, p) is None for p in self.guards(type(obj))):
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
