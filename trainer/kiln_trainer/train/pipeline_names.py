"""Where each GPT weight lives in a pipeline checkpoint, and the consolidation back to one GPT state dict.

Pipe layer ``i`` of :func:`kiln_trainer.train.pipeline.layer_specs` is: 0 the token embedding,
1..L the blocks, L+1 the final norm, L+2 the output projection. A pipe module names a parameter
``<i>.<name>`` (``tied_modules.embed.<name>`` for the shared embedding), and DeepSpeed saves layer
``i`` of a stage as ``layer_<ii>-model_states.pt`` holding that layer's own state dict. Importable
without DeepSpeed (export and continual learning use it).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from kiln_api.train_config import ModelConfig

_LAYER_FILE = re.compile(r"^layer_(\d+)-model_states\.pt$")


def layer_prefix(index: int, cfg: ModelConfig) -> str:
    """The GPT module path of pipe layer ``index``."""
    if index == 0:
        return "tok_emb"
    if index <= cfg.n_layers:
        return f"blocks.{index - 1}"
    if index == cfg.n_layers + 1:
        return "norm"
    if index == cfg.n_layers + 2:
        return "lm_head"
    raise ValueError(f"pipe layer {index} does not exist in a model of {cfg.n_layers} blocks")


def gpt_name(pipe_name: str, cfg: ModelConfig) -> str:
    """A pipe module's parameter name as the GPT names it."""
    head, _, rest = pipe_name.partition(".")
    if head == "tied_modules":
        key, _, rest = rest.partition(".")
        if key != "embed":
            raise ValueError(f"unknown tied module {key!r} in {pipe_name!r}")
        return f"tok_emb.{rest}"
    return f"{layer_prefix(int(head), cfg)}.{rest}"


def is_pipeline_checkpoint(folder: Path) -> bool:
    return any(_LAYER_FILE.match(p.name) for p in folder.iterdir())


def pipeline_state_dict(folder: Path, cfg: ModelConfig, expected: list[str]) -> dict[str, torch.Tensor]:
    """The GPT state dict (names ``expected``, fp32) from a pipeline checkpoint's per-layer files."""
    out: dict[str, torch.Tensor] = {}
    for path in sorted(folder.iterdir()):
        m = _LAYER_FILE.match(path.name)
        if m is None:
            continue
        prefix = layer_prefix(int(m.group(1)), cfg)
        for name, tensor in torch.load(path, map_location="cpu", weights_only=True).items():
            out[f"{prefix}.{name}"] = tensor.detach().float().contiguous()
    if cfg.tie_embeddings and "tok_emb.weight" in out:
        out["lm_head.weight"] = out["tok_emb.weight"]  # one tensor, as GPT's state dict holds it
    missing = sorted(set(expected) - set(out))
    unknown = sorted(set(out) - set(expected))
    if missing or unknown:
        raise ValueError(f"{folder}: pipeline layer files do not make up the model: missing {missing[:4]}, "
                         f"unexpected {unknown[:4]}")
    return {k: out[k] for k in expected}
