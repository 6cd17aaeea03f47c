import pytest
from kiln_api.s3layout import RunLayout, StorageURI, StorageURIError, step_folder


def test_parse_s3_and_join():
    uri = StorageURI.parse("s3://kiln-data/team-a/")
    assert (uri.scheme, uri.bucket, uri.prefix) == ("s3", "kiln-data", "team-a")
    layout = RunLayout(uri, "tiny")
    assert layout.checkpoint(120) == "s3://kiln-data/team-a/runs/tiny/checkpoints/step-00000120"
    assert layout.latest_pointer().endswith("/checkpoints/latest")
    assert layout.model_repository() == "s3://kiln-data/team-a/models"


def test_bucket_root_has_no_double_slash():
    assert StorageURI.parse("s3://bucket").join("a", "b") == "s3://bucket/a/b"


def test_file_uri():
    uri = StorageURI.parse("file:///tmp/kiln")
    assert uri.join("datasets", "abc") == "file:///tmp/kiln/datasets/abc"


@pytest.mark.parametrize(
    "bad", ["http://x/y", "s3://", "s3://UPPER/x", "file://relative/path", "s3://a/b"]
)
def test_bad_uris_name_the_field(bad):
    with pytest.raises(StorageURIError, match="spec.storage.uri"):
        StorageURI.parse(bad, field="spec.storage.uri")


def test_step_folder_orders_lexically():
    assert sorted([step_folder(s) for s in (100, 20, 3)]) == [step_folder(3), step_folder(20), step_folder(100)]
    with pytest.raises(ValueError):
        step_folder(-1)
