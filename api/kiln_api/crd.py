"""Generate the TrainingRun CustomResourceDefinition from the dataclasses in ``trainingrun.py``.

``python -m kiln_api.crd`` prints it; ``make crd`` writes it into the chart, and a unit test fails
when the chart's copy drifts from this output.

The schema is structural (every field typed, defaults in place so nested defaults apply) and carries
CEL rules (``x-kubernetes-validations``) for what a type cannot say: cross-field checks, forbidden
inline credentials and immutability. Cross-field rules are not written here: each type declares them
once in its ``RULES`` (``kiln_api.rules``) and this module renders them to CEL. Each rule names its
field in the message *and* via ``fieldPath`` so ``kubectl apply`` errors point at the culprit.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any

import yaml

from kiln_api import trainingrun as tr
from kiln_api.childnames import name_rule
from kiln_api.rules import rules_of
from kiln_api.specfields import camel, constraints, field_docs, hints, to_dict, unwrap_optional

_DEFAULT_MAX_STRING = 1024  # bounds the CEL cost estimate of rules that compare whole objects


def _json_paths(cls: type, where: str, out: dict[type, str]) -> dict[type, str]:
    """Where each dataclass sits in the resource (``TrainingSpec`` → ``spec.training``), for messages."""
    out.setdefault(cls, where)
    for f in dataclasses.fields(cls):
        inner, _ = unwrap_optional(hints(cls)[f.name])
        name = camel(f.name)
        if typing.get_origin(inner) is list:
            inner, name = typing.get_args(inner)[0], f"{name}[*]"
        if dataclasses.is_dataclass(inner) and isinstance(inner, type):
            _json_paths(inner, f"{where}.{name}", out)
    return out


WHERE = _json_paths(tr.TrainingRunSpec, "spec", {})


# Fields that exist in the schema only to be refused with a clear message, whatever the client's
# fieldValidation mode (unknown fields would otherwise be pruned silently).
FORBIDDEN: dict[type, dict[str, str]] = {
    tr.StorageSpec: {
        "accessKeyId": "spec.storage.accessKeyId: inline credentials are not allowed; use secretRef",
        "secretAccessKey": "spec.storage.secretAccessKey: inline credentials are not allowed; use secretRef",
        "sessionToken": "spec.storage.sessionToken: inline credentials are not allowed; use secretRef",
    },
    tr.SecretRef: {
        "namespace": "spec.storage.secretRef.namespace: the Secret must be in the run's own namespace",
    },
}


def _scalar(tp: Any) -> dict[str, Any]:
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer", "format": "int64"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string", "maxLength": _DEFAULT_MAX_STRING}
    raise TypeError(f"no schema for {tp}")


def type_schema(tp: Any) -> dict[str, Any]:
    """The schema of one annotated type (dataclass, list, dict or scalar)."""
    tp, _ = unwrap_optional(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return object_schema(tp)
    origin = getattr(tp, "__origin__", None)
    if origin is list:
        return {"type": "array", "items": type_schema(tp.__args__[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": type_schema(tp.__args__[1])}
    return _scalar(tp)


def _has_required(cls: type) -> bool:
    return any(
        f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )


def field_schema(cls: type, f: dataclasses.Field[Any]) -> dict[str, Any]:
    """Schema of one field: its type, description, constraints, default and immutability."""
    schema = type_schema(hints(cls)[f.name])
    doc = field_docs(cls).get(f.name)
    if doc:
        schema["description"] = doc
    c = constraints(f)
    for key, value in (("minimum", c.minimum), ("maximum", c.maximum), ("pattern", c.pattern),
                       ("maxLength", c.max_length), ("maxItems", c.max_items), ("minItems", c.min_items)):
        if value is not None:
            schema[key] = int(value) if key in ("minimum", "maximum") and float(value).is_integer() \
                and schema["type"] == "integer" else value
    if c.exclusive_minimum:
        schema["exclusiveMinimum"] = True
    if c.enum is not None:
        schema["enum"] = list(c.enum)
        schema.pop("maxLength", None)
    if f.default is not dataclasses.MISSING and f.default is not None:
        schema["default"] = f.default
    elif f.default_factory is not dataclasses.MISSING:
        inner, _ = unwrap_optional(hints(cls)[f.name])
        if dataclasses.is_dataclass(inner) and isinstance(inner, type) and not _has_required(inner):
            # The full default object (not {}): the API server checks defaults against the CEL rules
            # before nested defaulting would fill them in.
            schema["default"] = to_dict(inner())
        elif schema["type"] == "array":
            schema["default"] = []
    if c.immutable:
        schema.setdefault("x-kubernetes-validations", []).append(
            {"rule": "self == oldSelf", "message": f"{camel(f.name)} is immutable once set (recreate the run to change it)"}
        )
    return schema


def object_schema(cls: type) -> dict[str, Any]:
    """Schema of a dataclass: properties, required list, its CEL rules and forbidden fields."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        props[camel(f.name)] = field_schema(cls, f)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(camel(f.name))
    schema: dict[str, Any] = {"type": "object"}
    if cls.__doc__:
        schema["description"] = " ".join(cls.__doc__.split())
    schema["properties"] = props
    if required:
        schema["required"] = required
    rules = [r.cel_rule(cls, WHERE.get(cls, cls.__name__)) for r in rules_of(cls)]
    for f in dataclasses.fields(cls):
        if constraints(f).immutable and unwrap_optional(hints(cls)[f.name])[1]:
            # A field's own transition rule only runs when old and new both have it: setting or
            # unsetting an optional immutable field is caught one level up.
            name = camel(f.name)
            rules.append({"rule": f"has(self.{name}) == has(oldSelf.{name})",
                          "message": f"{WHERE.get(cls, cls.__name__)}.{name} is immutable: it cannot be set or "
                                     "unset after creation", "fieldPath": f".{name}"})
    for name, message in FORBIDDEN.get(cls, {}).items():
        props[name] = {"type": "string", "maxLength": 4096, "description": "Forbidden; see the message."}
        rules.append({"rule": f"!has(self.{name})", "message": message, "fieldPath": f".{name}"})
    if rules:
        schema["x-kubernetes-validations"] = rules
    return schema


def status_schema() -> dict[str, Any]:
    schema = object_schema(tr.TrainingRunStatus)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions.pop("default", None)
    return schema


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Step", "type": "integer", "jsonPath": ".status.progress.step"},
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
    {"name": "Tok/s", "type": "number", "jsonPath": ".status.progress.tokensPerSecond"},
    {"name": "ETA", "type": "number", "jsonPath": ".status.progress.etaSeconds",
     "description": "seconds to the step/token budget"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a dict."""
    spec = object_schema(tr.TrainingRunSpec)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{tr.PLURAL}.{tr.GROUP}"},
        "spec": {
            "group": tr.GROUP,
            "names": {
                "kind": tr.KIND,
                "listKind": f"{tr.KIND}List",
                "plural": tr.PLURAL,
                "singular": tr.KIND.lower(),
                "shortNames": [tr.SHORT_NAME],
                "categories": ["kiln"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": tr.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A training run: data → tokenizer → DeepSpeed training → export → Triton.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status_schema(),
                            },
                            "required": ["spec"],
                            # The API server checks only that a name is a DNS subdomain (253 chars).
                            "x-kubernetes-validations": [name_rule()],
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `python -m kiln_api.crd` (make crd). Do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=110, allow_unicode=True)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
