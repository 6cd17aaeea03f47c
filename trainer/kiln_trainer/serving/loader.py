"""Load one exported model version folder into a ready-to-generate model + tokenizer.

Used by the Triton python model (`serving/model.py`), by export (reference outputs, perplexity) and
by tests/bench for in-process generation, so all of them run exactly the same weights and code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kiln_trainer.export.consolidate import sha256_file
from kiln_trainer.export.quantize import dequantize_state_dict, dynamic_int8, is_quantized
from kiln_trainer.serving.cached import servable
from kiln_trainer.serving.int8 import Int8Embedding, SkipInit, int8_state_keys, swap_int8_modules

WEIGHTS = "weights.safetensors"
MODEL_CONFIG = "model_config.json"
TOKENIZER = "tokenizer.model"
MANIFEST = "manifest.json"
TIED_HEAD = "lm_head.weight"
INT8_MODES = ("int8", "dynamic", "dequant")
"""How an INT8 version is served: `int8` keeps int8 weights resident (`serving/int8.py`, the default),
`dynamic` uses torch's dynamic-quantized Linear (int8 matmul, activations quantized per batch),
`dequant` expands to fp32 at load (what versions exported before weights stayed int8 recorded)."""


class LoadError(RuntimeError):
    """The version folder is incomplete or inconsistent; the message names the file."""


@dataclass
class Served:
    """A loaded version: generation wrapper, tokenizer and what the manifest says."""

    model: nn.Module
    tokenizer: Any  # sentencepiece.SentencePieceProcessor
    manifest: dict[str, Any]
    context_length: int
    vocab_size: int

    @property
    def eos_id(self) -> int | None:
        eos = int(self.tokenizer.eos_id())
        return eos if eos >= 0 else None

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids))


def build_model(model_config_text: str, state_dict: dict[str, torch.Tensor], *, keep_int8: bool = True) -> nn.Module:
    """The trainer's GPT from model_config.json with `state_dict` loaded (a tied head may be omitted).

    A quantized state dict gives int8 modules (`keep_int8`) or, without it, an fp32 model."""
    from kiln_trainer.train.model import model_from_json

    if is_quantized(state_dict) and keep_int8:
        return _build_int8(model_config_text, state_dict)
    model = model_from_json(model_config_text)
    if is_quantized(state_dict):
        state_dict = dequantize_state_dict(state_dict)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = bool(getattr(model.cfg, "tie_embeddings", False))
    missing = [k for k in missing if not (tied and k == TIED_HEAD)]
    if missing or unexpected:
        raise LoadError(f"{WEIGHTS}: does not match {MODEL_CONFIG}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.float().eval().requires_grad_(False)  # served, never trained: no autograd bookkeeping


def _build_int8(model_config_text: str, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Built without initialising weights, then given the file's tensors as they are: no fp32 copy of
    a quantized matrix is ever written (see serving/int8.py)."""
    from kiln_trainer.train.model import model_from_json

    with SkipInit():
        model = model_from_json(model_config_text)
    rest = swap_int8_modules(model, state_dict)
    if model.cfg.tie_embeddings and isinstance(model.tok_emb, Int8Embedding):
        model.lm_head = model.tok_emb.as_linear()
    result = model.load_state_dict(rest, strict=False, assign=True)
    # A key neither loaded nor held by an int8 module would be left as unwritten memory: refuse.
    missing = sorted(set(result.missing_keys) - int8_state_keys(model))
    if missing or result.unexpected_keys:
        raise LoadError(f"{WEIGHTS}: does not match {MODEL_CONFIG}: missing {missing[:3]}, "
                        f"unexpected {result.unexpected_keys[:3]}")
    return model.float().eval().requires_grad_(False)


def load_version(folder: Path, *, verify: bool = True, int8_mode: str | None = None) -> Served:
    """Load `<repo>/<model>/<version>/`. `int8_mode` (one of INT8_MODES) overrides the manifest's."""
    import sentencepiece as spm
    from safetensors.torch import load_file

    for name in (MANIFEST, WEIGHTS, MODEL_CONFIG, TOKENIZER):
        if not (folder / name).is_file():
            raise LoadError(f"{folder}: {name} is missing")
    manifest = json.loads((folder / MANIFEST).read_text())
    if verify:
        want = manifest.get("weights_sha256")
        if want and sha256_file(folder / WEIGHTS) != want:
            raise LoadError(f"{folder / WEIGHTS}: sha256 does not match manifest.json (corrupt copy)")
    mode = int8_mode or (manifest.get("int8") or {}).get("serving_mode") or "int8"
    if mode not in INT8_MODES:
        raise LoadError(f"int8 serving_mode {mode!r} must be one of {list(INT8_MODES)}")
    model = build_model((folder / MODEL_CONFIG).read_text(), load_file(str(folder / WEIGHTS)), keep_int8=mode == "int8")
    if mode == "dynamic":
        model = dynamic_int8(model)
    tok = spm.SentencePieceProcessor(model_file=str(folder / TOKENIZER))
    cfg = model.cfg if hasattr(model, "cfg") else model.gpt.cfg
    if tok.vocab_size() > cfg.vocab_size:
        raise LoadError(f"{TOKENIZER}: vocabulary {tok.vocab_size()} is larger than the model's {cfg.vocab_size}")
    return Served(servable(model), tok, manifest, int(cfg.max_seq_len), int(cfg.vocab_size))
