import pytest
from kiln_api.export_config import ExportConfig, ExportConfigError

BASE = {"checkpoints_uri": "s3://kiln/t/runs/r1/checkpoints", "model_repository": "s3://kiln/t/models", "model_name": "tiny"}


def test_defaults_and_derived_names():
    cfg = ExportConfig.from_dict(BASE)
    assert cfg.version == "auto" and cfg.max_ppl_increase == 0.02 and cfg.checkpoint == "latest"
    assert cfg.run_name == "r1"
    # The variant is a property of the version, never of the model name.
    assert cfg.variant == "float32" and cfg.model_name == "tiny"
    assert ExportConfig.from_dict({**BASE, "dtype": "bfloat16"}).variant == "bfloat16"
    assert ExportConfig.from_dict({**BASE, "int8": True}).variant == "int8"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("checkpoints_uri", "http://x/y"),
        ("model_repository", "file://relative"),
        ("model_name", "bad name"),
        ("checkpoint", "newest"),
        ("version", 0),
        ("version", "3"),
        ("dtype", "float16"),
        ("int8", "yes"),
        ("max_ppl_increase", -0.1),
        ("reference_prompts", []),
        ("reference_max_new_tokens", 0),
        ("tokenizer_uri", "ftp://x"),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ExportConfigError, match=field):
        ExportConfig.from_dict({**BASE, field: value})


def test_unknown_and_missing_fields_are_named():
    with pytest.raises(ExportConfigError, match="modle_name"):
        ExportConfig.from_dict({**BASE, "modle_name": "x"})
    with pytest.raises(ExportConfigError, match="model_name"):
        ExportConfig.from_dict({k: v for k, v in BASE.items() if k != "model_name"})
