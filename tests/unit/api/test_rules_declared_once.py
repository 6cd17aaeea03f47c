"""Each cross-field rule is declared once (kiln_api.rules) and every check in the code base derives from it.

How "no rule written twice" is checked:
1. no ``__post_init__``/``validate`` method of the api types branches on two fields of ``self`` at once
   (a cross-field check written by hand); single-field range checks are allowed there;
2. no two rule declarations say the same thing (same condition over the same field names);
3. every CEL rule in the generated CRD comes from a declaration, from immutability or from a forbidden
   field, so ``crd.py`` holds no hand-written rule;
4. the batch arithmetic (``global % (micro × world)``) appears in the source only in its declaration.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

from kiln_api import crd, data_config, train_config, trainingrun
from kiln_api.childnames import name_rule
from kiln_api.rules import Rule, cel, declared_rules, rules_of

ROOT = Path(__file__).resolve().parents[3]
API = ROOT / "api" / "kiln_api"
MODULES = (trainingrun, train_config, data_config)


def _self_fields(node: ast.AST) -> set[str]:
    return {n.attr for n in ast.walk(node)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"}


def test_no_hand_written_cross_field_checks_in_validation_methods() -> None:
    offenders = []
    for path in sorted(API.glob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef) and fn.name in ("__post_init__", "validate"):
                for node in ast.walk(fn):
                    if isinstance(node, ast.If | ast.IfExp) and len(_self_fields(node.test)) > 1:
                        offenders.append(f"{path.name}:{node.lineno} {ast.unparse(node.test)}")
    assert not offenders, "declare these as kiln_api.rules.Rule instead:\n" + "\n".join(offenders)


def test_no_rule_is_declared_twice() -> None:
    seen: dict[tuple[str, str], Rule] = {}
    for rule in declared_rules(*MODULES):
        key = (cel(rule.check), rule.field)
        assert key not in seen, f"{rule.field}: {key[0]} is declared twice"
        seen[key] = rule


def test_projections_come_from_declarations() -> None:
    declarations = set(map(id, declared_rules(*MODULES)))
    for module in MODULES:
        for value in vars(module).values():
            if isinstance(value, type) and dataclasses.is_dataclass(value):
                for rule in rules_of(value):
                    assert id(rule.declaration) in declarations, f"{value.__name__}.{rule.field}"


def _crd_rules(node: object, out: list[dict[str, str]]) -> list[dict[str, str]]:
    if isinstance(node, dict):
        out.extend(node.get("x-kubernetes-validations", []))
        for child in node.values():
            _crd_rules(child, out)
    elif isinstance(node, list):
        for child in node:
            _crd_rules(child, out)
    return out


def test_every_crd_rule_is_generated() -> None:
    generated = {r.cel_rule(cls, crd.WHERE[cls])["rule"] for cls in crd.WHERE for r in rules_of(cls)}
    forbidden = {f"!has(self.{name})" for fields in crd.FORBIDDEN.values() for name in fields}
    generated.add(name_rule()["rule"])  # derived from the children's names (kiln_api.childnames)
    for rule in _crd_rules(crd.build_crd(), []):
        text = rule["rule"]
        immutable = text == "self == oldSelf" or re.fullmatch(r"has\(self\.(\w+)\) == has\(oldSelf\.\1\)", text)
        assert text in generated or text in forbidden or immutable, f"hand-written CEL: {text}"
        assert rule["message"].startswith(("spec.", "spec:", "metadata.name:")) or "immutable" in rule["message"], rule


def test_batch_arithmetic_lives_in_its_declaration_only() -> None:
    pattern = re.compile(r"global_batch_size\s*%|%\s*\(?\s*[\w.]*micro_batch_size|globalBatchSize\s*%")
    hits = []
    for folder in ("api", "operator", "trainer"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{lineno}")
    assert len(hits) == 1 and hits[0].startswith("api/kiln_api/train_config.py"), hits
