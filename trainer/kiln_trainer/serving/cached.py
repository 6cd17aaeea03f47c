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


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (even, odd) channel pairs of x (B, H, T, D) like training does; cos/sin broadcast to
    (T, D/2) for shared positions or (B, 1, T, D/2) for per-row positions."""
    c, s = cos.to(x.dtype), sin.to(x.dtype)
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

    supports_padding = True
    """`generate_batch` may left-pad rows of different lengths into one batch (see `pad`)."""

    def _attend(
        self, blk: nn.Module, h: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None, start: int,
        rope: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attn = blk.attn
        b, t, d = h.shape
        q = attn.q(h).view(b, t, attn.n_heads, attn.head_dim).transpose(1, 2)
        k, v = attn.kv(h).view(b, t, 2, attn.n_kv, attn.head_dim).permute(2, 0, 3, 1, 4)
        if rope is None:
            cos, sin = self.gpt.rope_cos[start : start + t], self.gpt.rope_sin[start : start + t]
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        else:
            q, k = _rotate(q, *rope), _rotate(k, *rope)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        new_past = (k, v)  # cached before the GQA expansion: n_kv heads, not n_heads
        if attn.n_kv != attn.n_heads:
            rep = attn.n_heads // attn.n_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif t == 1:
            y = F.scaled_dot_product_attention(q, k, v)  # one new query sees everything cached
        elif past is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # several new queries after a cache: causal with an offset
            total = k.shape[2]
            allowed = torch.ones(t, total, dtype=torch.bool, device=h.device).tril(total - t)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return attn.out(y.transpose(1, 2).reshape(b, t, d)), new_past

    def _padded(self, pad: torch.Tensor, start: int, t: int) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Per-row rotary tables and the attention mask for left-padded rows.

        Row b's real tokens start at column pad[b], so column j holds position j - pad[b]. A query
        sees real keys up to itself; a padding query sees only itself (a row with nothing to
        attend to would give NaN, which would then leak through the values of later layers).
        """
        cols = torch.arange(start, start + t)
        pos = (cols[None, :] - pad[:, None]).clamp(min=0)  # (B, T)
        rope = (self.gpt.rope_cos[pos].unsqueeze(1), self.gpt.rope_sin[pos].unsqueeze(1))
        keys = torch.arange(start + t)
        causal = keys[None, :] <= cols[:, None]  # (T, S)
        real = keys[None, :] >= pad[:, None]  # (B, S)
        mask = (causal[None] & real[:, None, :]) | (keys[None, :] == cols[:, None])[None]
        return rope, mask.unsqueeze(1)  # (B, 1, T, S)

    def forward(
        self, input_ids: torch.Tensor, past_kv: KV | None = None, use_cache: bool = True,
        pad: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KV | None]:
        """`pad` (B,): left-padding columns per row; keep passing the same tensor on every step."""
        start = 0 if past_kv is None else int(past_kv[0][0].shape[2])
        t = input_ids.shape[1]
        if start + t > self.max_seq_len + (0 if pad is None else int(pad.min())):
            raise ValueError(f"{start + t} positions exceed model.max_seq_len={self.max_seq_len}")
        rope, mask = (None, None) if pad is None or not bool(pad.any()) else self._padded(pad, start, t)
        x = self.gpt.tok_emb(input_ids)
        new: KV = []
        for i, blk in enumerate(self.gpt.blocks):
            a, kv = self._attend(blk, blk.norm1(x), None if past_kv is None else past_kv[i], start, rope, mask)
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
