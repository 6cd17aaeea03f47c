"""A KV-cache forward for the trainer's `GPT`, without changing the training code.

The training model (`kiln_trainer.train.model.GPT`) has a plain `forward(tokens) -> logits`. For
serving we need `forward(input_ids, past_kv, use_cache) -> (logits, new_past)`, the contract of
`serving.generate`. `CachedGPT` reuses the trained submodules (embedding, per-block norms and
projections, final norm, head) and only re-orders the attention math so keys/values of earlier
positions are kept and new tokens get the right rotary positions.

For `arch='classic'` (nn.MultiheadAttention, post-norm) there is no cache: `RecomputeGPT` keeps the
tokens seen so far as its "past" and runs the full forward each step (correct, O(T^2) per step).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

KV = list[tuple[torch.Tensor, torch.Tensor]]


def _rope_at(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: int) -> torch.Tensor:
    """Rotate x (B, H, T, D) as positions start..start+T-1, pairing (even, odd) like training does."""
    t = x.shape[-2]
    c, s = cos[start : start + t].to(x.dtype), sin[start : start + t].to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)


class CachedGPT(nn.Module):
    """Wraps a trained `GPT` (arch 'gpt', causal) and serves it with a per-layer KV cache."""

    def __init__(self, gpt: nn.Module) -> None:
        super().__init__()
        cfg = gpt.cfg
        if cfg.arch != "gpt":
            raise ValueError(f"CachedGPT needs model.arch 'gpt', got {cfg.arch!r} (use RecomputeGPT)")
        self.gpt = gpt
        self.max_seq_len = int(cfg.max_seq_len)
        self.vocab_size = int(cfg.vocab_size)

    def _attend(self, blk: nn.Module, h: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None, start: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attn = blk.attn
        b, t, d = h.shape
        q = attn.q(h).view(b, t, attn.n_heads, attn.head_dim).transpose(1, 2)
        k, v = attn.kv(h).view(b, t, 2, attn.n_kv, attn.head_dim).permute(2, 0, 3, 1, 4)
        cos, sin = self.gpt.rope_cos, self.gpt.rope_sin
        q, k = _rope_at(q, cos, sin, start), _rope_at(k, cos, sin, start)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        new_past = (k, v)  # cached before the GQA expansion: n_kv heads, not n_heads
        if attn.n_kv != attn.n_heads:
            rep = attn.n_heads // attn.n_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if t == 1:
            y = F.scaled_dot_product_attention(q, k, v)  # one new query sees everything cached
        elif past is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # several new queries after a cache: causal with an offset
            total = k.shape[2]
            allowed = torch.ones(t, total, dtype=torch.bool, device=h.device).tril(total - t)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return attn.out(y.transpose(1, 2).reshape(b, t, d)), new_past

    def forward(self, input_ids: torch.Tensor, past_kv: KV | None = None, use_cache: bool = True) -> tuple[torch.Tensor, KV | None]:
        start = 0 if past_kv is None else int(past_kv[0][0].shape[2])
        if start + input_ids.shape[1] > self.max_seq_len:
            raise ValueError(
                f"{start + input_ids.shape[1]} positions exceed model.max_seq_len={self.max_seq_len}"
            )
        x = self.gpt.tok_emb(input_ids)
        new: KV = []
        for i, blk in enumerate(self.gpt.blocks):
            a, kv = self._attend(blk, blk.norm1(x), None if past_kv is None else past_kv[i], start)
            x = x + a
            x = x + blk.mlp(blk.norm2(x))
            new.append(kv)
        logits = self.gpt.lm_head(self.gpt.norm(x))
        return logits, (new if use_cache else None)


class RecomputeGPT(nn.Module):
    """No-cache fallback: the past is the token prefix, every step reruns the full model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.gpt = model
        self.max_seq_len = int(model.cfg.max_seq_len)
        self.vocab_size = int(model.cfg.vocab_size)

    def forward(self, input_ids: torch.Tensor, past_kv: Any = None, use_cache: bool = True) -> tuple[torch.Tensor, Any]:
        tokens = input_ids if past_kv is None else torch.cat((past_kv, input_ids), dim=1)
        logits = self.gpt(tokens)[:, -input_ids.shape[1] :, :]
        return logits, (tokens if use_cache else None)


def servable(model: nn.Module) -> nn.Module:
    """The generation wrapper for a trained model, in eval mode."""
    cfg = model.cfg
    if cfg.objective != "causal":
        raise ValueError(f"model.objective {cfg.objective!r} cannot generate text; only 'causal' models are served")
    model.eval()
    wrapped = CachedGPT(model) if cfg.arch == "gpt" else RecomputeGPT(model)
    return wrapped.eval()
