"""Hugging Face export: `config.json` + `model.safetensors` in Llama naming, for arch 'gpt'.

kiln's 'gpt' block is Llama's (RMSNorm, RoPE, SwiGLU, GQA, no biases), so the weights map one to
one except for two packings: `attn.kv` holds K then V, `mlp.gate_up` holds gate then up; both are
split. One real difference: kiln rotates (even, odd) channel pairs (the original Llama code), while
HF's Llama rotates (first half, second half). `_to_half_rope` permutes the rows of each head of the
Q and K projections so that HF's rotation gives the same attention scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def _to_half_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder each head's output rows from (x0, x1, x2, x3, ...) pairs to (evens..., odds...)."""
    rows, cols = w.shape
    hd = rows // n_heads
    return w.view(n_heads, hd // 2, 2, cols).transpose(1, 2).reshape(rows, cols).contiguous()


def hf_config(cfg: dict[str, Any]) -> dict[str, Any]:
    kv = cfg.get("n_kv_heads") or cfg["n_heads"]
    ffn = cfg.get("ffn_hidden") or -(-((8 * cfg["d_model"]) // 3) // 64) * 64
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg["vocab_size"],
        "hidden_size": cfg["d_model"],
        "intermediate_size": ffn,
        "num_hidden_layers": cfg["n_layers"],
        "num_attention_heads": cfg["n_heads"],
        "num_key_value_heads": kv,
        "max_position_embeddings": cfg["max_seq_len"],
        "rms_norm_eps": cfg.get("norm_eps", 1e-5),
        "rope_theta": cfg.get("rope_theta", 10000.0),
        "hidden_act": "silu",
        "tie_word_embeddings": bool(cfg.get("tie_embeddings", True)),
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }


def unsupported_reason(cfg: dict[str, Any]) -> str | None:
    """Why this model has no HF Llama equivalent, or None if it has one."""
    if cfg.get("arch", "gpt") != "gpt":
        return f"arch {cfg.get('arch')!r} has no Llama equivalent (post-norm, learned MHA)"
    if cfg.get("objective", "causal") != "causal":
        return f"objective {cfg.get('objective')!r} is not a causal LM"
    return None


def to_hf_state_dict(sd: dict[str, torch.Tensor], cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    h = hf_config(cfg)
    n_heads, n_kv = h["num_attention_heads"], h["num_key_value_heads"]
    kv_rows = n_kv * (h["hidden_size"] // n_heads)
    out = {"model.embed_tokens.weight": sd["tok_emb.weight"], "model.norm.weight": sd["norm.weight"]}
    if not h["tie_word_embeddings"]:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(h["num_hidden_layers"]):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        kv = sd[src + "attn.kv.weight"]
        gate, up = sd[src + "mlp.gate_up.weight"].chunk(2, dim=0)
        out.update({
            dst + "input_layernorm.weight": sd[src + "norm1.weight"],
            dst + "post_attention_layernorm.weight": sd[src + "norm2.weight"],
            dst + "self_attn.q_proj.weight": _to_half_rope(sd[src + "attn.q.weight"], n_heads),
            dst + "self_attn.k_proj.weight": _to_half_rope(kv[:kv_rows], n_kv),
            dst + "self_attn.v_proj.weight": kv[kv_rows:],
            dst + "self_attn.o_proj.weight": sd[src + "attn.out.weight"],
            dst + "mlp.gate_proj.weight": gate,
            dst + "mlp.up_proj.weight": up,
            dst + "mlp.down_proj.weight": sd[src + "mlp.down.weight"],
        })
    return {k: v.contiguous().clone() for k, v in out.items()}


def write_hf(sd: dict[str, torch.Tensor], cfg: dict[str, Any], dest: Path) -> dict[str, Path]:
    """Write `config.json` and `model.safetensors` into dest; returns {name: path}."""
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(hf_config(cfg), indent=2, sort_keys=True))
    save_file(to_hf_state_dict(sd, cfg), str(dest / "model.safetensors"), metadata={"format": "pt"})
    return {"hf/config.json": dest / "config.json", "hf/model.safetensors": dest / "model.safetensors"}
