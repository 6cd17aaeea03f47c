"""One source for typed spec classes, their validation and their OpenAPI schema.

Spec classes are plain dataclasses. Each field carries

* a docstring (a string literal right below it), read back with :func:`field_docs` so the CRD's
  ``description`` and the Python docs never disagree, and
* optional constraints given through :func:`knob` (minimum, maximum, enum, pattern, immutable).

:func:`from_dict` turns a camelCase dict (what the API server stores) into those dataclasses, checking
types and constraints and naming the failing field (``spec.training.nodes: must be >= 1, got 0``).
:func:`to_dict` goes back. ``crd.py`` walks the same classes to emit the structural schema.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class SpecError(ValueError):
    """Invalid input (a spec, a step config, a data spec): the message starts with the field's dotted path.

    The one error type of kiln_api: ``SpecError(path, problem)``, or ``SpecError("path: problem")``
    where a caller already has the whole sentence (the part before the first ": " is the path).
    """

    def __init__(self, path: str, problem: str | None = None) -> None:
        if problem is None:
            path, _, problem = path.partition(": ")
        super().__init__(f"{path}: {problem}" if problem else path)
        self.path = path
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class Constraints:
    """Schema constraints of one field; None means unconstrained."""

    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    max_length: int | None = None
    max_items: int | None = None
    min_items: int | None = None
    immutable: bool = False
    exclusive_minimum: bool = False
    """The minimum itself is refused (``> minimum``): a fraction like 0.01 as a bound would still let
    values between 0 and it through, and 0 must never pass where the trainer divides by the value."""


_MISSING: Any = dataclasses.MISSING


def knob(
    default: Any = _MISSING,
    *,
    factory: Any = _MISSING,
    minimum: float | None = None,
    maximum: float | None = None,
    enum: tuple[str, ...] | None = None,
    pattern: str | None = None,
    max_length: int | None = None,
    max_items: int | None = None,
    min_items: int | None = None,
    immutable: bool = False,
    exclusive_minimum: bool = False,
) -> Any:
    """A dataclass field with schema constraints (they are checked by from_dict and emitted in the CRD)."""
    meta = {
        "kiln": Constraints(minimum, maximum, enum, pattern, max_length, max_items, min_items, immutable,
                             exclusive_minimum),
    }
    if factory is not _MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def constraints(f: dataclasses.Field[Any]) -> Constraints:
    found = f.metadata.get("kiln")
    return found if isinstance(found, Constraints) else Constraints()


def camel(name: str) -> str:
    """snake_case → camelCase (the JSON spelling of a field)."""
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass: ``{field: doc}`` (empty string when missing)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


@functools.cache  # resolving annotations parses strings; specs are parsed on every reconcile
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, whether None is allowed) for ``X | None``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only X | None unions are supported, got {tp}")
        return args[0], True
    return tp, False


def matches_pattern(pattern: str, value: str) -> bool:
    """``pattern`` as the API server (Go RE2) reads it: Python's ``$`` also matches before a final
    newline, RE2's only at the very end, and a trailing newline must not pass here either."""
    m = re.search(pattern, value)
    return m is not None and (not pattern.endswith("$") or m.end() == len(value))


def _check_constraints(path: str, value: Any, c: Constraints) -> None:
    if c.minimum is not None and c.exclusive_minimum and value <= c.minimum:
        raise SpecError(path, f"must be > {c.minimum:g}, got {value}")
    if c.minimum is not None and value < c.minimum:
        raise SpecError(path, f"must be >= {c.minimum:g}, got {value}")
    if c.maximum is not None and value > c.maximum:
        raise SpecError(path, f"must be <= {c.maximum:g}, got {value}")
    if c.enum is not None and value not in c.enum:
        raise SpecError(path, f"must be one of {', '.join(c.enum)}; got {value!r}")
    if c.pattern is not None and not matches_pattern(c.pattern, value):
        raise SpecError(path, f"must match {c.pattern}; got {value!r}")
    if c.max_length is not None and len(value) > c.max_length:
        raise SpecError(path, f"must be at most {c.max_length} characters")
    if c.max_items is not None and len(value) > c.max_items:
        raise SpecError(path, f"must have at most {c.max_items} items")
    if c.min_items is not None and len(value) < c.min_items:
        raise SpecError(path, f"must have at least {c.min_items} item(s)")


def _convert(path: str, tp: Any, raw: Any) -> Any:
    tp, nullable = unwrap_optional(tp)
    if raw is None:
        if nullable:
            return None
        raise SpecError(path, "must not be null")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, raw, path)
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(raw, list):
            raise SpecError(path, f"must be a list, got {type(raw).__name__}")
        (item,) = typing.get_args(tp)
        return [_convert(f"{path}[{i}]", item, v) for i, v in enumerate(raw)]
    if origin is dict:
        if not isinstance(raw, Mapping):
            raise SpecError(path, f"must be a map, got {type(raw).__name__}")
        _, val = typing.get_args(tp)
        return {str(k): _convert(f"{path}.{k}", val, v) for k, v in raw.items()}
    if tp is bool:
        if not isinstance(raw, bool):
            raise SpecError(path, f"must be true or false, got {raw!r}")
        return raw
    if tp is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise SpecError(path, f"must be an integer, got {raw!r}")
        return raw
    if tp is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise SpecError(path, f"must be a number, got {raw!r}")
        return float(raw)
    if tp is str:
        if not isinstance(raw, str):
            raise SpecError(path, f"must be a string, got {raw!r}")
        return raw
    raise TypeError(f"{path}: unsupported field type {tp}")


def from_dict(cls: type[T], raw: Any, path: str = "spec") -> T:
    """Build ``cls`` from a camelCase mapping; unknown keys and bad values raise SpecError."""
    if not isinstance(raw, Mapping):
        raise SpecError(path, f"must be an object, got {type(raw).__name__}")
    assert dataclasses.is_dataclass(cls)  # programming error, not input validation
    fields = {camel(f.name): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise SpecError(f"{path}.{unknown[0]}", f"unknown field (known: {', '.join(sorted(fields))})")
    types_ = hints(cls)
    kwargs: dict[str, Any] = {}
    for key, f in fields.items():
        sub = f"{path}.{key}"
        if key not in raw:
            if f.default is _MISSING and f.default_factory is _MISSING:
                raise SpecError(sub, "is required")
            continue
        value = _convert(sub, types_[f.name], raw[key])
        if value is not None:
            _check_constraints(sub, value, constraints(f))
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except SpecError as err:
        # __post_init__ reports paths relative to its own object; make them absolute.
        raise SpecError(f"{path}.{err.path}", err.problem) from None


def to_dict(obj: Any) -> Any:
    """A dataclass tree → camelCase plain data, leaving out fields that are None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is not None:
                out[camel(f.name)] = to_dict(value)
        return out
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
