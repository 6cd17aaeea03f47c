"""The generated CRD: structure, CEL rules, printer columns, drift against the chart, examples valid."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kiln_api.crd import build_crd, render
from kiln_api.trainingrun import parse_spec
from kiln_op_testlib import ROOT, gpu_spec_dict

CHART_CRD = ROOT / "charts" / "kiln" / "crds" / "trainingrun.yaml"


def _version() -> dict[str, Any]:
    (v,) = build_crd()["spec"]["versions"]
    assert isinstance(v, dict)
    return v


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        out += _walk(sub, f"{path}.{name}")
    if "items" in schema:
        out += _walk(schema["items"], f"{path}[]")
    return out


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with additionalProperties: false everywhere (the API server prunes; we want errors)."""
    s = copy.deepcopy(schema)
    for _, node in _walk(s):
        if node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = False
    return s


def test_chart_crd_is_the_generated_one() -> None:
    assert CHART_CRD.read_text() == render(), "chart CRD drifted: run `make crd` and commit the result"


def test_identity_and_columns() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "trainingruns.kiln.dev"
    assert crd["spec"]["names"]["shortNames"] == ["tr"]
    v = _version()
    assert v["name"] == "v1alpha1" and v["subresources"] == {"status": {}}
    assert [c["name"] for c in v["additionalPrinterColumns"]] == ["Phase", "Step", "Loss", "Tok/s", "ETA", "Age"]


def test_schema_is_structural_and_described() -> None:
    spec = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, node in _walk(spec):
        assert "type" in node, f"spec{path} has no type (not structural)"
        if path and not path.endswith("[]") and not node.get("description", "").startswith("Forbidden"):
            assert node.get("description"), f"spec{path} has no description"
        if node["type"] == "string" and "enum" not in node:
            assert "maxLength" in node, f"spec{path}: unbounded strings make CEL cost estimates explode"


def test_cel_rules_and_immutability_are_present() -> None:
    spec = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {(p, r["rule"]) for p, node in _walk(spec) for r in node.get("x-kubernetes-validations", [])}
    assert (".training.zero", "!(has(self.offloadParams) && has(self.stage)) || "
                              "(!self.offloadParams || (self.stage == 3))") in rules
    assert (".storage", "!has(self.secretAccessKey)") in rules
    assert (".storage.secretRef", "!has(self.namespace)") in rules
    immutable = (".data", ".model", ".storage.uri", ".launcher", ".training.nodes", ".training.gpusPerNode",
                 ".training.accelerator", ".training.microBatchSize", ".training.globalBatchSize",
                 ".training.precision", ".training.zero", ".training.seed")
    for field in immutable:
        assert (field, "self == oldSelf") in rules
    # optional immutable fields may not be set or unset later either (checked one level up)
    assert (".training", "has(self.microBatchSize) == has(oldSelf.microBatchSize)") in rules
    applied = (".training.optimizer", ".training.maxSteps", ".training.resources", ".serving", ".image")
    assert not any((field, "self == oldSelf") in rules for field in applied)
    zero = spec["properties"]["training"]["properties"]["zero"]["properties"]["stage"]
    assert (zero["minimum"], zero["maximum"]) == (0, 3)
    assert spec["properties"]["training"]["properties"]["nodes"]["minimum"] == 1
    assert spec["properties"]["storage"]["properties"]["uri"]["pattern"].startswith("^s3://")


def _validate(spec: dict[str, Any]) -> None:
    schema = strict(_version()["schema"]["openAPIV3Schema"]["properties"]["spec"])
    # OpenAPI v3.0, as the API server reads it: exclusiveMinimum is a boolean beside minimum (draft 4).
    jsonschema.Draft4Validator(schema).validate(spec)


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.yaml")))
def test_examples_validate_against_the_schema(example: str) -> None:
    runs = [d for d in yaml.safe_load_all((ROOT / "examples" / example).read_text())
            if d and d.get("kind") == "TrainingRun"]
    for doc in runs:
        _validate(doc["spec"])
        parse_spec(doc["spec"])  # and the Python twin of the CEL rules agrees


def test_schema_rejects_what_it_should() -> None:
    _validate(gpu_spec_dict())
    bad = gpu_spec_dict()
    bad["training"]["zero"] = {"stage": 4}
    with pytest.raises(jsonschema.ValidationError, match="4 is greater than the maximum"):
        _validate(bad)
    bad = gpu_spec_dict()
    bad["storage"]["uri"] = "https://bucket/x"
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        _validate(bad)


def test_module_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    from kiln_api.crd import main

    assert main() == 0
    assert yaml.safe_load(capsys.readouterr().out) == build_crd()


def test_generated_file_path_is_in_the_chart() -> None:
    assert Path(CHART_CRD).parent.name == "crds"
