import pytest
from kiln_trainer.storage import AlreadyExists, NotFound, StoreError, open_store


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}/root")


def test_roundtrip_and_list(store, tmp_path):
    store.put_bytes("a/b.txt", b"hello")
    src = tmp_path / "f.bin"
    src.write_bytes(b"\x00" * 10)
    store.put_file("a/c/f.bin", src)
    assert store.get_bytes("a/b.txt") == b"hello"
    assert store.list("a") == ["a/b.txt", "a/c/f.bin"]
    assert store.list("missing") == []
    store.get_file("a/c/f.bin", tmp_path / "out" / "g.bin")
    assert (tmp_path / "out" / "g.bin").read_bytes() == b"\x00" * 10


def test_conditional_put_refuses_second_writer(store):
    store.put_bytes("commit", b"1", if_absent=True)
    with pytest.raises(AlreadyExists):
        store.put_bytes("commit", b"2", if_absent=True)
    assert store.get_bytes("commit") == b"1"


def test_missing_key_names_uri(store):
    with pytest.raises(NotFound, match="nope"):
        store.get_bytes("nope")
    assert not store.exists("nope")


def test_key_cannot_escape_root(store):
    with pytest.raises(StoreError, match="escapes"):
        store.put_bytes("../evil", b"x")
