"""Fixtures for trainer tests: a small real-text dataset (byte-level tokens) and tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln_trainer.train.data import bundled_documents, write_byte_dataset


@pytest.fixture(scope="session")
def text_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """English + Chinese stories from the bundled corpus as UTF-8 byte tokens."""
    folder = tmp_path_factory.mktemp("text-data")
    write_byte_dataset(folder, bundled_documents())
    return folder
