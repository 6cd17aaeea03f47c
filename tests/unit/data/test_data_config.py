from __future__ import annotations

import pytest
from kiln_api.data_config import DataSpec, DataSpecError, PrepareConfig

SRC = [{"uri": "/data/*.jsonl", "format": "jsonl"}]


def spec(**kw: object) -> DataSpec:
    return DataSpec.from_dict({"sources": SRC, **kw})


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"sources": []}, "data.sources"),
        ({"sources": [{"uri": "/x", "format": "csv"}]}, "data.sources[0].format"),
        ({"sources": [{"uri": "/x", "weight": 0}]}, "data.sources[0].weight"),
        ({"sources": [{"uri": ""}]}, "data.sources[0].uri"),
        ({"sources": [{"uri": "/x", "colour": 1}]}, "data.sources[0].colour"),
        ({"sources": SRC, "dedup": {"num_perm": 128, "bands": 10}}, "data.dedup.bands"),
        ({"sources": SRC, "dedup": {"threshold": 1.5}}, "data.dedup.threshold"),
        ({"sources": SRC, "tokenizer": {"vocab_size": 10}}, "data.tokenizer.vocab_size"),
        ({"sources": SRC, "tokenizer": {"character_coverage": 0.5}}, "data.tokenizer.character_coverage"),
        ({"sources": SRC, "filters": {"min_units": 10, "max_units": 5}}, "data.filters.max_units"),
        ({"sources": SRC, "filters": {"date_from": "yesterday"}}, "data.filters.date_from"),
        ({"sources": SRC, "packing": {"val_fraction": 0.9}}, "data.packing.val_fraction"),
        ({"sources": SRC, "packing": {"num_shards": 0}}, "data.packing.num_shards"),
        ({"sources": SRC, "typo": 1}, "data.typo"),
    ],
)
def test_bad_spec_names_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(DataSpecError) as err:
        DataSpec.from_dict(raw)
    assert str(err.value).startswith(field + ":"), str(err.value)


def test_prepare_config_requires_output_uri() -> None:
    with pytest.raises(DataSpecError, match="^output:"):
        PrepareConfig.from_dict({"output": "relative/dir", "data": {"sources": SRC}})
    with pytest.raises(DataSpecError, match="^data:"):
        PrepareConfig.from_dict({"output": "file:///tmp/x"})


def test_spec_hash_is_stable_and_sensitive() -> None:
    a = spec(tokenizer={"vocab_size": 1000})
    b = DataSpec.from_dict({"tokenizer": {"vocab_size": 1000}, "sources": [dict(reversed(SRC[0].items()))]})
    assert a.spec_hash() == b.spec_hash()
    assert len(a.spec_hash()) == 16
    assert a.spec_hash() != spec(tokenizer={"vocab_size": 1001}).spec_hash()
    assert a.spec_hash() != spec(tokenizer={"vocab_size": 1000}, sample_seed=8).spec_hash()
    # a golden value: the hash must not drift (and orphan every prepared dataset) by accident
    assert spec().spec_hash() == "d228048ccc2d6fa2"  # new clean steps (pipeline 3)


def test_pipeline_version_is_part_of_the_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    import kiln_api.data_config as dc

    before = spec().spec_hash()
    monkeypatch.setattr(dc, "PIPELINE_VERSION", dc.PIPELINE_VERSION + 1)
    assert spec().spec_hash() != before
