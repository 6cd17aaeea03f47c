"""The Helm chart, checked without helm: values vs schema, every value documented, RBAC least privilege.

Rendering and installing with the real helm happens in tests/integration/test_operator_chart.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from kiln_op_testlib import ROOT

CHART = ROOT / "charts" / "kiln"


def _values() -> dict[str, Any]:
    doc = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _schema() -> dict[str, Any]:
    doc = json.loads((CHART / "values.schema.json").read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("scenario", sorted(p.name for p in (CHART / "ci").glob("*.yaml")))
def test_values_and_ci_scenarios_match_the_schema(scenario: str) -> None:
    jsonschema.validate(_values(), _schema())
    override = yaml.safe_load((CHART / "ci" / scenario).read_text())
    merged = _merge(_values(), override)
    jsonschema.validate(merged, _schema())


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_schema_refuses_unknown_and_bad_values() -> None:
    bad = _values()
    bad["operatr"] = {}
    with pytest.raises(jsonschema.ValidationError, match="operatr"):
        jsonschema.validate(bad, _schema())
    bad = _values()
    bad["operator"]["logLevel"] = "LOUD"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, _schema())


def test_every_value_has_a_comment() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    for n, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w]*):", line)
        if not m:
            continue
        above = lines[n - 1].strip() if n else ""
        nested_block = line.rstrip().endswith(":") and not above.startswith("#")
        # A mapping header may go without a comment only when every key under it has one.
        if nested_block:
            continue
        assert above.startswith("#"), f"values.yaml:{n + 1} `{line.strip()}` has no comment above it"


def _rules() -> list[dict[str, Any]]:
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    block = text.split('define "kiln.rules" -}}', 1)[1].split("{{- end -}}", 1)[0]
    rules = yaml.safe_load(block)
    assert isinstance(rules, list) and rules
    return rules


def test_rbac_has_no_wildcards_and_no_secrets() -> None:
    for rule in _rules():
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], f"wildcard in {rule}"
        if "secrets" in rule["resources"]:  # the serving key Secrets: created, never read
            assert rule["verbs"] == ["create"], "the operator never reads credentials"
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def test_rbac_covers_what_the_operator_creates() -> None:
    """Every kind the builders create must be creatable, or reconcile fails in a real cluster."""
    from kiln_operator.kube import KINDS

    allowed = {(g, r) for rule in _rules() if "create" in rule["verbs"]
               for g in rule["apiGroups"] for r in rule["resources"]}
    for (api_version, kind), k in KINDS.items():
        if kind in ("Pod", "TrainingRun", "Workload"):
            continue  # read only (Workload: Kueue's record of a queued training job)
        group = api_version.split("/")[0] if "/" in api_version else ""
        assert (group, k.plural) in allowed, f"chart RBAC cannot create {kind}"


def test_deployment_is_restricted() -> None:
    text = (CHART / "templates" / "deployment.yaml").read_text()
    for needle in ("runAsNonRoot: true", "readOnlyRootFilesystem: true", "allowPrivilegeEscalation: false",
                   'drop: ["ALL"]', "type: RuntimeDefault"):
        assert needle in text, needle


def test_operator_is_highly_available_with_leader_election() -> None:
    """Two replicas by default; only the Lease holder reconciles, so the chart must enable the election
    and let the ServiceAccount write its Lease (nothing more of coordination.k8s.io)."""
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert "replicas: {{ .Values.operator.replicas }}" in deployment and _values()["operator"]["replicas"] == 2
    assert "KILN_LEADER_ELECTION" in deployment and "fieldPath: metadata.name" in deployment
    rbac = (CHART / "templates" / "rbac.yaml").read_text()
    lease_rules = [r for doc in rbac.split("\n---") if "kind: Role\n" in doc and "leases" in doc
                   for r in yaml.safe_load(re.sub(r"{{.*?}}", "x", doc))["rules"]]
    assert lease_rules == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                            "verbs": ["get", "create", "update"]}]


def test_prometheus_rule_has_the_brief_alerts() -> None:
    text = (CHART / "templates" / "prometheusrule.yaml").read_text()
    for alert in ("KilnLossOscillating", "KilnGradNormOutOfRange", "KilnGPUUnderutilized", "KilnTrainingStalled"):
        assert f"alert: {alert}" in text


def test_dashboard_is_valid_json_with_panels() -> None:
    dash = json.loads((CHART / "dashboards" / "kiln.json").read_text())
    titles = {p["title"] for p in dash["panels"]}
    assert {"TrainingRuns by phase", "Training loss", "Gang restarts by reason"} <= titles
