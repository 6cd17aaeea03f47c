import json

import pytest
from kiln_trainer.serving.launch import ServeError, pinned_config, triton_repository

PBTXT = """
name: "tiny"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
version_policy: { all {} }
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] } ]
"""


def test_pinned_config_keeps_model_and_pins_version():
    cfg = pinned_config(PBTXT, 7)
    assert cfg["version_policy"] == {"specific": {"versions": ["7"]}}  # int64 → JSON string, as Triton writes it
    assert cfg["backend"] == "python"
    assert cfg["model_transaction_policy"] == {"decoupled": True}
    assert cfg["input"][0]["name"] == "TEXT"
    json.dumps(cfg)  # what the load API receives must serialize


def test_triton_repository_forms():
    assert (
        triton_repository("s3://kiln/demo/models", "http://minio.kiln-system.svc:9000")
        == "s3://http://minio.kiln-system.svc:9000/kiln/demo/models"
    )
    assert triton_repository("s3://kiln/models", None) == "s3://kiln/models"
    assert triton_repository("file:///srv/models", None) == "/srv/models"
    with pytest.raises(ServeError, match="AWS_ENDPOINT_URL"):
        triton_repository("s3://kiln/models", "minio:9000")
