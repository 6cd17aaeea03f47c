"""One GPT state dict from a pipeline- or tensor-parallel checkpoint folder (export, continual learning).

A data-parallel checkpoint keeps the whole module in ``mp_rank_00_model_states.pt`` (or ZeRO-3
shards); a pipeline checkpoint keeps one file per layer, a tensor-parallel one one module file per
tensor rank. Both are put back into the names and shapes of :class:`GPT`, so an export of a
PP or TP run is the same safetensors a data-parallel run gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from kiln_api.train_config import ModelConfig

from kiln_trainer.train.commit import MODEL_CONFIG
from kiln_trainer.train.model import GPT
from kiln_trainer.train.pipeline_names import is_pipeline_checkpoint, pipeline_state_dict
from kiln_trainer.train.tensor_parallel import merge_shards


def _model_config(folder: Path) -> ModelConfig:
    path = folder / MODEL_CONFIG
    if not path.is_file():
        raise ValueError(f"{folder}: no {MODEL_CONFIG} beside the model-parallel checkpoint files")
    return ModelConfig(**json.loads(path.read_text()))


def parallel_state_dict(folder: Path) -> dict[str, torch.Tensor] | None:
    """fp32 GPT weights of a pipeline or tensor-parallel checkpoint; None for a data-parallel one."""
    tensor_files = sorted(folder.glob("mp_rank_*_model_states.pt"))
    if is_pipeline_checkpoint(folder):
        cfg = _model_config(folder)
        with torch.device("meta"):
            expected = list(GPT(cfg).state_dict())
        return pipeline_state_dict(folder, cfg, expected)
    if len(tensor_files) > 1:
        shards = [torch.load(f, map_location="cpu", weights_only=False)["module"] for f in tensor_files]
        merged = merge_shards([{k.removeprefix("module."): v for k, v in s.items()} for s in shards])
        return {k: v.detach().float().contiguous() for k, v in merged.items()}
    return None
