"""The network: a decoder-only GPT and the classic post-LN transformer, built from `ModelConfig`.

Importable without DeepSpeed: export and serving rebuild the model from the ``model_config.json``
saved in every checkpoint (`model_from_json`) and load a plain state dict into it.

`GPT` (arch 'gpt'): token embedding → blocks of [RMSNorm → attention with RoPE (grouped-query when
n_kv_heads < n_heads) through SDPA → residual; RMSNorm → SwiGLU → residual] → RMSNorm → output
projection tied to the embedding. `arch='classic'` swaps the block for the original transformer's:
sinusoidal positions added to the embedding, nn.MultiheadAttention, post-LayerNorm, GELU MLP.
With ``objective='masked'`` attention is bidirectional.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import torch
import torch.nn.functional as F
from kiln_api.train_config import ModelConfig
from torch import nn
from torch.utils.checkpoint import checkpoint


def rope_tables(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (max_len, head_dim/2) for rotary embeddings."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (even, odd) of x (B, H, T, D) by position-dependent angles."""
    t = x.shape[-2]
    c, s = cos[:t].to(x.dtype), sin[:t].to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)
    return rotated.flatten(-2)


class Attention(nn.Module):
    """Multi-head attention with RoPE; fewer key/value heads than query heads gives GQA."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv = cfg.n_heads, cfg.kv_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        self.causal = cfg.objective == "causal"
        self.dropout = cfg.dropout
        self.q = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * self.n_kv * self.head_dim, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.q(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(b, t, 2, self.n_kv, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.n_kv != self.n_heads:  # GQA: each key/value head serves a group of query heads
            rep = self.n_heads // self.n_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, dropout_p=drop)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.ffn_width, bias=False)
        self.down = nn.Linear(cfg.ffn_width, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class GPTBlock(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), cos, sin))
        return x + self.drop(self.mlp(self.norm2(x)))


class ClassicBlock(nn.Module):
    """Post-norm: norm(x + attn(x)), then norm(x + mlp(x)), as in the original transformer."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.causal = cfg.objective == "causal"
        self.attn = nn.MultiheadAttention(cfg.d_model, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ffn_width), nn.GELU(), nn.Linear(cfg.ffn_width, cfg.d_model)
        )
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        mask = None
        if self.causal:
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)  # True = not allowed
        a, _ = self.attn(x, x, x, attn_mask=mask, need_weights=False)
        x = self.norm1(x + self.drop(a))
        return self.norm2(x + self.drop(self.mlp(x)))


def sinusoid_table(max_len: int, d_model: int) -> torch.Tensor:
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: d_model // 2])
    return table


class GPT(nn.Module):
    """Token ids (B, T) → logits (B, T, vocab)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        block = GPTBlock if cfg.arch == "gpt" else ClassicBlock
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.n_layers))
        # The classic block normalises inside each block (post-norm); the GPT block needs a final norm.
        self.norm: nn.Module = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.arch == "gpt" else nn.Identity()
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        # Position tables are derived, not learned: non-persistent, so state dicts hold weights only.
        cos, sin = rope_tables(cfg.d_model // cfg.n_heads, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if cfg.arch == "classic":
            self.register_buffer("pos_table", sinusoid_table(cfg.max_seq_len, cfg.d_model), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue  # norms keep their ones/zeros, biases their defaults
            # Projections that write into the residual stream are scaled down with depth (GPT-2).
            scale = 1.0 / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("out.weight", "down.weight")) else 1.0
            nn.init.normal_(p, mean=0.0, std=std * scale)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        if t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {t} tokens is longer than model.max_seq_len={self.cfg.max_seq_len}")
        x = self.tok_emb(tokens)
        if self.cfg.arch == "classic":
            x = x * math.sqrt(self.cfg.d_model) + self.pos_table[:t].to(x.dtype)
        x = self.drop(x)
        for blk in self.blocks:
            if self.cfg.activation_checkpointing and self.training:
                x = checkpoint(blk, x, self.rope_cos, self.rope_sin, use_reentrant=False)
            else:
                x = blk(x, self.rope_cos, self.rope_sin)
        return self.lm_head(self.norm(x))


def build_model(cfg: ModelConfig) -> GPT:
    return GPT(cfg)


def count_params(cfg: ModelConfig) -> int:
    """Parameters of the model built from cfg (tied weights counted once), without building it."""
    with torch.device("meta"):
        model = GPT(cfg)
    return sum(p.numel() for p in model.parameters())


def flops_per_token(cfg: ModelConfig, seq_len: int, n_params: int | None = None) -> float:
    """Training FLOPs per token: 6N + 12·L·H·Q·T (PaLM appendix B; recomputation not counted)."""
    n = count_params(cfg) if n_params is None else n_params
    head_dim = cfg.d_model // cfg.n_heads
    return 6.0 * n + 12.0 * cfg.n_layers * cfg.n_heads * head_dim * seq_len


def model_config_json(cfg: ModelConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)


def model_from_json(text: str) -> GPT:
    """Rebuild the (untrained) model from a checkpoint's model_config.json."""
    raw: dict[str, Any] = json.loads(text)
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(f"model_config.json: unknown field {unknown[0]!r} (written by a newer kiln?)")
    return GPT(ModelConfig(**raw))
