"""Helpers shared by the trainer tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln_api.train_config import TrainConfig
from kiln_api.train_presets import tiny_cpu


def tiny_config(tmp: Path, data: Path, **sections: Any) -> TrainConfig:
    """tiny_cpu pointed at tmp storage, with section overrides, e.g. schedule={"max_steps": 6}."""
    base = tiny_cpu(run="t", storage_uri=f"file://{tmp}/store", data_path=str(data)).to_dict()
    base["checkpoint"]["local_dir"] = str(tmp / "local")
    base["monitor"]["tensorboard"] = False
    for key, value in sections.items():
        if isinstance(value, dict):
            base[key].update(value)
        else:
            base[key] = value
    return TrainConfig.from_dict(base)
