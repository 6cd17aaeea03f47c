"""INT8 weights stay INT8 in the serving model: the modules, the loader, and what stays resident."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from kiln_api.train_config import ModelConfig
from kiln_trainer.export.quantize import SCALE_SUFFIX, quantize_state_dict
from kiln_trainer.serving.cached import servable
from kiln_trainer.serving.int8 import Int8Embedding, Int8Linear, block_rows, weight_dtypes
from kiln_trainer.serving.loader import TIED_HEAD, LoadError, build_model
from kiln_trainer.train.model import GPT, model_config_json
from torch import nn


def _quantized(out_f: int, in_f: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g)
    q = quantize_state_dict({"w": w})
    return q["w"], q["w" + SCALE_SUFFIX], q["w"].float() * q["w" + SCALE_SUFFIX][:, None]


@pytest.mark.parametrize("in_f", [48, 9000])  # 9000: several blocks of rows, the last one partial
def test_int8_linear_is_the_dequantized_matmul(in_f: int) -> None:
    out_f = 2 * block_rows(in_f) + 5
    wq, scale, w = _quantized(out_f, in_f)
    bias = torch.randn(out_f)
    layer = Int8Linear(wq, scale, bias)
    x = torch.randn(2, 3, in_f)
    got = layer(x)
    assert got.shape == (2, 3, out_f)
    torch.testing.assert_close(got, F.linear(x, w, bias), rtol=1e-4, atol=1e-3)
    assert layer.weight_int8.dtype == torch.int8 and layer.weight_int8.data_ptr() == wq.data_ptr()


def test_int8_modules_refuse_float_weights() -> None:
    with pytest.raises(ValueError, match="int8"):
        Int8Linear(torch.randn(4, 4), torch.ones(4))
    with pytest.raises(ValueError, match="one entry per row"):
        Int8Linear(torch.zeros(4, 4, dtype=torch.int8), torch.ones(3))


def test_int8_embedding_rows_and_tied_head_share_one_tensor() -> None:
    wq, scale, w = _quantized(50, 16)
    emb = Int8Embedding(wq, scale)
    ids = torch.tensor([[0, 7, 49], [3, 3, 1]])
    torch.testing.assert_close(emb(ids), F.embedding(ids, w))
    head = emb.as_linear()
    assert head.weight_int8.data_ptr() == emb.weight_int8.data_ptr()
    h = torch.randn(1, 2, 16)
    torch.testing.assert_close(head(h), F.linear(h, w), rtol=1e-4, atol=1e-4)


def _trained_like(arch: str, tied: bool) -> tuple[str, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=4, max_seq_len=32, arch=arch, tie_embeddings=tied)
    sd = GPT(cfg).state_dict()
    if tied:
        sd.pop(TIED_HEAD)  # the export stores the tied head once, as the embedding
    return model_config_json(cfg), quantize_state_dict(sd)


@pytest.mark.parametrize(("arch", "tied"), [("gpt", True), ("gpt", False), ("classic", True)])
def test_loader_keeps_quantized_matrices_int8(arch: str, tied: bool) -> None:
    text, q = _trained_like(arch, tied)
    int8 = build_model(text, q)
    fp = build_model(text, q, keep_int8=False)  # the same weights expanded to fp32 at load
    kinds = {type(m) for m in int8.modules()}
    assert Int8Linear in kinds and Int8Embedding in kinds
    # Plain Linear layers are all replaced; only the MHA's own projection (read by its owner) is not.
    assert not [n for n, m in int8.named_modules() if type(m) is nn.Linear]
    float_matrices = [n for n, p in int8.named_parameters() if p.dim() == 2]
    assert float_matrices == ([] if arch == "gpt" else [n for n, _ in fp.named_parameters() if "attn" in n and _.dim() == 2])
    # What stays float: norms, biases, the derived position tables (and classic's MHA projections).
    derived = {"rope_cos", "rope_sin", "pos_table"}
    float_2d = {n for n, t in [*int8.named_parameters(), *int8.named_buffers()] if t.is_floating_point() and t.dim() == 2}
    assert float_2d - derived == set(float_matrices)
    if arch == "gpt":
        table_bytes = sum(t.numel() * 4 for n, t in int8.named_buffers() if n in derived)
        assert sum(weight_dtypes(int8).values()) - table_bytes < 0.3 * (sum(weight_dtypes(fp).values()) - table_bytes)
    if tied:
        assert int8.lm_head.weight_int8.data_ptr() == int8.tok_emb.weight_int8.data_ptr()
    ids = torch.randint(0, 96, (2, 10))
    torch.testing.assert_close(int8(ids), fp(ids), rtol=1e-3, atol=1e-3)
    # The KV-cache wrapper runs on the int8 modules too.
    logits, _ = servable(int8)(ids)
    torch.testing.assert_close(logits, fp(ids), rtol=1e-3, atol=1e-3)


def test_loader_names_mismatched_weights() -> None:
    text, q = _trained_like("gpt", True)
    del q["blocks.1.mlp.down.weight"], q["blocks.1.mlp.down.weight" + SCALE_SUFFIX]
    with pytest.raises(LoadError, match=r"missing \['blocks.1.mlp.down"):
        build_model(text, q)
    bigger = dataclasses.replace(ModelConfig(vocab_size=96, d_model=32, n_layers=3, n_heads=4, max_seq_len=32))
    with pytest.raises(LoadError, match="missing"):
        build_model(model_config_json(bigger), _trained_like("gpt", True)[1])
