"""Model weights from a checkpoint or an exported-model folder (continual learning, distillation).

A folder (file:// or s3://, local path) holds `model_config.json` and either `model.safetensors`
(an export) or a committed kiln checkpoint (DeepSpeed files; ZeRO-3 shards are consolidated).
It may also be a run's `checkpoints/` folder: then the newest committed checkpoint whose files
verify against its manifest is used.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from kiln_api.s3layout import step_folder
from kiln_api.train_config import ModelConfig

from kiln_trainer.train.commit import COMMIT, MANIFEST, MODEL_CONFIG, CheckpointError, RunCheckpoints


def _local_copy(uri: str, scratch: Path) -> Path:
    from kiln_trainer.storage import open_store

    if not uri.startswith(("s3://", "file://")):
        uri = f"file://{Path(uri).resolve()}"
    store = open_store(uri)
    if not store.exists(MODEL_CONFIG):  # a run's checkpoints/ folder: pick the newest valid commit
        found = RunCheckpoints(store, "").fetch_newest_valid(lambda s: scratch / step_folder(s))
        if found is None:
            raise CheckpointError(f"{uri}: no {MODEL_CONFIG} and no committed checkpoint below it")
        return scratch / step_folder(found[0])
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    for key in store.list():
        store.get_file(key, scratch / key)
    return scratch


def _checkpoint_state(folder: Path) -> dict[str, torch.Tensor]:
    from kiln_trainer.train.consolidate_parallel import parallel_state_dict

    parallel = parallel_state_dict(folder)
    if parallel is not None:
        return parallel
    names = {p.name for p in folder.iterdir()}
    if any("zero_pp_rank" in n and n.endswith("model_states.pt") for n in names):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return dict(get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name))
    if "mp_rank_00_model_states.pt" in names:
        state = torch.load(folder / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        return {k: v.float() for k, v in state["module"].items()}
    raise CheckpointError(f"{folder}: neither model.safetensors nor DeepSpeed model states found")


def load_weights(uri: str) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(model config, fp32 state dict) of the model stored at `uri`."""
    with tempfile.TemporaryDirectory(prefix="kiln-weights-") as tmp:
        folder = _local_copy(uri, Path(tmp))
        cfg_path = folder / MODEL_CONFIG
        if not cfg_path.is_file():
            raise CheckpointError(f"{uri}: no {MODEL_CONFIG}")
        if (folder / MANIFEST).exists() and not (folder / COMMIT).exists():
            raise CheckpointError(f"{uri}: checkpoint folder is not committed")
        cfg = ModelConfig(**json.loads(cfg_path.read_text()))
        if (folder / "model.safetensors").is_file():
            from safetensors.torch import load_file

            return cfg, load_file(str(folder / "model.safetensors"))
        return cfg, _checkpoint_state(folder)
