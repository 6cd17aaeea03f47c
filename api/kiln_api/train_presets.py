"""Named starting points for `TrainConfig`, as plain functions.

A config file may say ``preset: gpt_125m`` and override any field below it; see
`apply_preset`. Sizes follow the usual GPT family shapes (d_model, layers, heads).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

from kiln_api.contract import CHECKPOINT_DIR
from kiln_api.train_config import (
    BatchConfig,
    CheckpointConfig,
    ConfigError,
    DataConfig,
    EarlyStopConfig,
    ModelConfig,
    OptimConfig,
    PrecisionConfig,
    ScheduleConfig,
    TrainConfig,
    ZeroConfig,
)

VOCAB_SIZE = 64_000
"""The GPU presets' BPE vocabulary (also the tokenizer's): inside the 50k–100k a Chinese-first model
wants (room for the common CJK characters as single pieces next to English and code), a multiple of
128 for the embedding matmuls, and below 65,536 so token shards stay uint16."""

WARMUP_STEPS = 5000
"""The GPU presets' linear warmup; the compiler shortens it for a run too short for it (and says so)."""

_RUN = "preset"
_STORE = "file:///tmp/kiln"
_DATA = "file:///tmp/kiln/data"


def tiny_cpu(run: str = _RUN, storage_uri: str = _STORE, data_path: str = _DATA) -> TrainConfig:
    """~0.1M parameters: CPU tests and the demo (seconds per hundred steps on 2 cores)."""
    return TrainConfig(
        run=run,
        storage_uri=storage_uri,
        data=DataConfig(path=data_path),
        model=ModelConfig(vocab_size=2048, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128),
        optim=OptimConfig(lr=3e-3, weight_decay=0.01),
        schedule=ScheduleConfig(warmup_steps=5, max_steps=40),
        batch=BatchConfig(global_batch_size=8, micro_batch_size=4, seq_len=64),
        checkpoint=CheckpointConfig(every_steps=20, keep_last=2),
        early_stop=EarlyStopConfig(eval_every_steps=20, eval_batches=2),
    )


def _gpu(
    run: str, storage_uri: str, data_path: str, model: ModelConfig, lr: float, micro: int, zero: int
) -> TrainConfig:
    return TrainConfig(
        run=run,
        storage_uri=storage_uri,
        data=DataConfig(path=data_path),
        model=model,
        optim=OptimConfig(lr=lr, weight_decay=0.1),
        schedule=ScheduleConfig(warmup_steps=WARMUP_STEPS, max_steps=None, max_tokens=20 * 10**9),
        batch=BatchConfig(global_batch_size=256, micro_batch_size=micro, seq_len=model.max_seq_len),
        precision=PrecisionConfig(bf16=True),
        zero=ZeroConfig(stage=zero),
        checkpoint=CheckpointConfig(every_steps=1000, keep_last=3, local_dir=CHECKPOINT_DIR),
        early_stop=EarlyStopConfig(eval_every_steps=1000, eval_batches=20, patience=5, min_delta=1e-3),
    )


def gpt_125m(run: str = _RUN, storage_uri: str = _STORE, data_path: str = _DATA) -> TrainConfig:
    """GPT-2 small shape (~135M with the 64k vocabulary), bf16 + ZeRO-2."""
    model = ModelConfig(vocab_size=VOCAB_SIZE, d_model=768, n_layers=12, n_heads=12, max_seq_len=2048)
    return _gpu(run, storage_uri, data_path, model, lr=6e-4, micro=16, zero=2)


def gpt_1b(run: str = _RUN, storage_uri: str = _STORE, data_path: str = _DATA) -> TrainConfig:
    """~1.2B parameters (OLMo-1B-like shape), bf16 + ZeRO-2, activation checkpointing."""
    model = ModelConfig(
        vocab_size=VOCAB_SIZE, d_model=2048, n_layers=16, n_heads=16, ffn_hidden=8192, max_seq_len=2048,
        activation_checkpointing=True,
    )
    return _gpu(run, storage_uri, data_path, model, lr=4e-4, micro=8, zero=2)


def gpt_7b(run: str = _RUN, storage_uri: str = _STORE, data_path: str = _DATA) -> TrainConfig:
    """Mistral-7B-like shape (grouped-query attention, 8 KV heads), bf16 + ZeRO-3, activation checkpointing."""
    model = ModelConfig(
        vocab_size=VOCAB_SIZE,
        d_model=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=8,
        ffn_hidden=14336,
        max_seq_len=4096,
        activation_checkpointing=True,
    )
    cfg = _gpu(run, storage_uri, data_path, model, lr=3e-4, micro=1, zero=3)
    cfg.batch = BatchConfig(global_batch_size=512, micro_batch_size=1, seq_len=4096)
    return cfg


def custom_base(gpu: bool, *, layers: int, hidden: int, heads: int, kv_heads: int | None, ffn_hidden: int | None,
                seq_len: int) -> TrainConfig:
    """A custom shape (spec.model.preset: custom) on the training settings of tiny_cpu, or of gpt_125m on GPUs."""
    base = gpt_125m() if gpu else tiny_cpu()
    base.model = dataclasses.replace(base.model, d_model=hidden, n_layers=layers, n_heads=heads, n_kv_heads=kv_heads,
                                     ffn_hidden=ffn_hidden, max_seq_len=seq_len)
    base.batch = dataclasses.replace(base.batch, seq_len=seq_len)
    return base


PRESETS: dict[str, Callable[..., TrainConfig]] = {
    "tiny_cpu": tiny_cpu,
    "gpt_125m": gpt_125m,
    "gpt_1b": gpt_1b,
    "gpt_7b": gpt_7b,
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_preset(raw: dict[str, Any]) -> TrainConfig:
    """Build a config from a file's mapping: an optional ``preset`` name plus overrides."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: must be a mapping, got {type(raw).__name__}")
    raw = dict(raw)
    name = raw.pop("preset", None)
    if name is None:
        return TrainConfig.from_dict(raw)
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return TrainConfig.from_dict(_merge(PRESETS[name]().to_dict(), raw))
