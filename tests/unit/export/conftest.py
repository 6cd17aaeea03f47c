"""One small real checkpoint (DeepSpeed ZeRO-2, a few steps) and its export, shared by this folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kiln_trainer.export.fixture import make_checkpoint_tree


@pytest.fixture(scope="session")
def ckpt_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<root> holding runs/tiny/checkpoints/step-00000005 (committed, `latest` points to it)."""
    root = tmp_path_factory.mktemp("ckroot")
    make_checkpoint_tree(root, run="tiny", step=5)
    return root


@pytest.fixture
def fresh_tree(ckpt_tree: Path, tmp_path: Path) -> Path:
    """A private copy a test may damage."""
    dst = tmp_path / "root"
    shutil.copytree(ckpt_tree, dst)
    return dst
