import torch
from kiln_trainer.export.hf import _to_half_rope, to_hf_state_dict
from kiln_trainer.export.quantize import dequantize_state_dict, quantize_state_dict, tensor_bytes


def test_int8_size_and_error_bound():
    torch.manual_seed(0)
    sd = {"w": torch.randn(256, 128), "norm": torch.ones(128)}
    q = quantize_state_dict(sd)
    assert q["w"].dtype == torch.int8 and q["norm"].dtype == torch.float32
    assert tensor_bytes(q) / tensor_bytes(sd) < 0.3
    back = dequantize_state_dict(q)
    assert set(back) == set(sd)
    # Symmetric rounding: error at most half a step (scale/2) in every row.
    step = sd["w"].abs().amax(dim=1, keepdim=True) / 127
    assert ((back["w"] - sd["w"]).abs() <= step / 2 + 1e-6).all()
    assert torch.equal(back["norm"], sd["norm"])


def _rope_pairs(x, theta=10000.0):
    """kiln's rotation: (even, odd) pairs."""
    d = x.shape[-1]
    t = torch.arange(x.shape[0], dtype=torch.float32)[:, None]
    ang = t * (1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * ang.cos() - x2 * ang.sin(), x1 * ang.sin() + x2 * ang.cos()), -1).flatten(-2)


def _rope_half(x, theta=10000.0):
    """HF Llama's rotation: (first half, second half) with rotate_half."""
    d = x.shape[-1]
    t = torch.arange(x.shape[0], dtype=torch.float32)[:, None]
    ang = t * (1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    rot = torch.cat((-x[..., d // 2:], x[..., : d // 2]), -1)
    return x * cos + rot * sin


def test_rope_permutation_preserves_attention_scores():
    torch.manual_seed(0)
    hd, dm, t = 8, 16, 5
    wq, wk, h = torch.randn(hd, dm), torch.randn(hd, dm), torch.randn(t, dm)
    ours = _rope_pairs(h @ wq.T) @ _rope_pairs(h @ wk.T).T
    hf = _rope_half(h @ _to_half_rope(wq, 1).T) @ _rope_half(h @ _to_half_rope(wk, 1).T).T
    assert torch.allclose(ours, hf, atol=1e-4)


def test_hf_names_split_packed_weights():
    cfg = {"vocab_size": 10, "d_model": 8, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 16, "ffn_hidden": 12}
    sd = {"tok_emb.weight": torch.randn(10, 8), "norm.weight": torch.ones(8),
          "blocks.0.norm1.weight": torch.ones(8), "blocks.0.norm2.weight": torch.ones(8),
          "blocks.0.attn.q.weight": torch.randn(8, 8), "blocks.0.attn.kv.weight": torch.randn(8, 8),
          "blocks.0.attn.out.weight": torch.randn(8, 8), "blocks.0.mlp.gate_up.weight": torch.randn(24, 8),
          "blocks.0.mlp.down.weight": torch.randn(8, 12)}
    out = to_hf_state_dict(sd, cfg)
    assert out["model.layers.0.self_attn.k_proj.weight"].shape == (4, 8)
    assert torch.equal(out["model.layers.0.self_attn.v_proj.weight"], sd["blocks.0.attn.kv.weight"][4:])
    assert torch.equal(out["model.layers.0.mlp.up_proj.weight"], sd["blocks.0.mlp.gate_up.weight"][12:])
    assert "lm_head.weight" not in out  # tied by default
