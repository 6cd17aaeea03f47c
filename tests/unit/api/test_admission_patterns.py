"""The CRD's string patterns, exclusive minimums, minItems and the run-name rule, in Python and in the schema.

The API server itself runs the same schema in tests/admission (the invalid-manifest corpus); here each
pattern is pinned with values that must pass and values that must not, so a loosened pattern fails fast.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from kiln_api import crd
from kiln_api.childnames import check_run_name, derived_suffixes, max_run_name_length, name_rule
from kiln_api.specfields import SpecError
from kiln_api.trainingrun import parse_spec

BASE: dict[str, Any] = {
    "storage": {"uri": "s3://kiln/demo", "endpoint": "http://minio.kiln-system.svc:9000"},
    "data": {"sources": [{"uri": "builtin://tinycorpus/*_stories.txt", "format": "txt"}]},
    "training": {"maxSteps": 10},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    node: Any = spec
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    node[leaf] = value
    return spec


GOOD = [
    ("image", "ghcr.io/kiln-dev/kiln-trainer:0.1.0"),
    ("image", "localhost:5000/kiln/trainer@sha256:" + "a" * 64),
    ("image", "kiln.local/busybox"),
    ("image", "python:3.11-slim"),
    ("storage.uri", "s3://kiln"),
    ("storage.uri", "s3://kiln/a/b.c/"),
    ("storage.endpoint", "https://s3.eu-west-1.amazonaws.com"),
    ("storage.endpoint", "http://10.0.0.7:9000"),
    ("storage.endpoint", "http://[fd00::1]:9000/"),
    ("data.sources.0.uri", "file:///data/corpus/*.jsonl.zst"),
    ("data.sources.0.uri", "s3://bucket/prefix/part-{0,1}[0-9]*.parquet"),
    ("data.sources.0.weight", 0.001),
]

BAD = [
    ("image", "ghcr.io/kiln-dev/kiln trainer:0.1"), ("image", "trainer:1\n"), ("image", "trainer;rm -rf /"),
    ("image", "trainer:$(id)"), ("image", "Trainer:1"), ("image", ""),
    ("storage.uri", "s3://kiln/../other"), ("storage.uri", "s3://kiln/./x"), ("storage.uri", "s3://kiln/a b"),
    ("storage.uri", "s3://kiln/x\n"),
    ("storage.endpoint", "http://minio:9000\n"), ("storage.endpoint", "http://minio 9000"),
    ("storage.endpoint", "http://minio:9000/`id`"), ("storage.endpoint", "ftp://minio"),
    ("data.sources.0.uri", "builtin://tinycorpus/../../etc/passwd"), ("data.sources.0.uri", "file:///a b.txt"),
    ("data.sources.0.uri", "s3://bucket/x\ny"), ("data.sources.0.uri", "builtin://../x"),
    ("data.sources.0.weight", 0), ("data.sources.0.weight", 0.0),
    ("storage.region", "us east"),
]


@pytest.mark.parametrize(("path", "value"), GOOD, ids=[f"{p}={v!r}" for p, v in GOOD])
def test_accepted(path: str, value: Any) -> None:
    parse_spec(_with(path, value))


@pytest.mark.parametrize(("path", "value"), BAD, ids=[f"{p}={v!r}" for p, v in BAD])
def test_refused_naming_the_field(path: str, value: Any) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(_with(path, value))
    assert err.value.path == "spec." + path.replace(".0.", "[0].")


def test_distillation_temperature_zero_is_refused() -> None:
    spec = _with("training.distillation", {"teacherRun": "big", "temperature": 0})
    with pytest.raises(SpecError, match=r"temperature: must be > 0"):
        parse_spec(spec)


def test_schema_says_exclusive_minimum_and_min_items() -> None:
    props = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    weight = props["data"]["properties"]["sources"]["items"]["properties"]["weight"]
    assert weight["minimum"] == 0 and weight["exclusiveMinimum"] is True
    assert props["data"]["properties"]["sources"]["minItems"] == 1


def test_run_name_bound_leaves_room_for_the_longest_child() -> None:
    limit = max_run_name_length()
    assert limit + max(len(s) for s in derived_suffixes()) == 63
    check_run_name("a" * limit)
    for bad in ("a" * (limit + 1), "1abc", "a.b", "abc-"):
        with pytest.raises(SpecError, match="metadata.name"):
            check_run_name(bad)
    rule = name_rule()
    assert f"size(self.metadata.name) <= {limit}" in rule["rule"] and "metadata.name" in rule["message"]
    assert re.search(r"\.matches\('\^\[a-z\]", rule["rule"])
