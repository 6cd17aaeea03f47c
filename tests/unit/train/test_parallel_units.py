"""Model-parallel pieces without a gang: the tensor-parallel split is exact, the pipe/GPT name table is
complete, and every file of a model-parallel checkpoint is uploaded by the rank that wrote it."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
from kiln_api.train_config import ModelConfig
from kiln_trainer.train.ckpt_owners import Coords, owner_map
from kiln_trainer.train.model import GPT
from kiln_trainer.train.pipeline_names import gpt_name, layer_prefix
from kiln_trainer.train.tensor_parallel import (
    TensorParallelAttention,
    TensorParallelSwiGLU,
    merge_shards,
    shard,
)

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, max_seq_len=16)


@pytest.fixture(scope="module")
def world_of_one() -> object:
    """A gloo group of one: the tensor-parallel all-reduces are identities, so shards can be summed by hand."""
    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=0, world_size=1)
    return dist.group.WORLD


def _sharded(block: torch.nn.Module, index: int, r: int, t: int, group: object) -> tuple[torch.nn.Module, ...]:
    attn, mlp = TensorParallelAttention(block.attn, r, t, group), TensorParallelSwiGLU(block.mlp, t, group)
    full = {f"blocks.{index}.{k}": v for k, v in block.state_dict().items()}
    with torch.no_grad():
        for prefix, part in (("attn", attn), ("mlp", mlp)):
            for name, p in part.named_parameters(prefix=f"blocks.{index}.{prefix}"):
                p.copy_(shard(name, full[name], r, t))
    return attn, mlp


@pytest.mark.parametrize("t", [2, 4])
def test_tensor_shards_sum_to_the_full_block(world_of_one: object, t: int) -> None:
    cfg = ModelConfig(**{**CFG.__dict__, "n_kv_heads": 4 if t == 4 else 2})
    torch.manual_seed(0)
    gpt = GPT(cfg)
    block = gpt.blocks[1]
    x = torch.randn(2, 8, cfg.d_model)
    want_attn = block.attn(x, gpt.rope_cos, gpt.rope_sin)
    want_mlp = block.mlp(x)
    parts = [_sharded(block, 1, r, t, world_of_one) for r in range(t)]
    # Each rank's row-parallel output is a partial sum; the forward all-reduce adds them up.
    got_attn = sum(a(x, gpt.rope_cos, gpt.rope_sin) for a, _ in parts)
    got_mlp = sum(m(x) for _, m in parts)
    torch.testing.assert_close(got_attn, want_attn, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_mlp, want_mlp, rtol=1e-5, atol=1e-6)


def test_merge_undoes_shard_for_every_weight() -> None:
    torch.manual_seed(0)
    full = GPT(CFG).state_dict()
    shards = [{k: shard(k, v, r, 2) for k, v in full.items()} for r in range(2)]
    assert shards[0]["blocks.0.mlp.gate_up.weight"].shape == (full["blocks.0.mlp.gate_up.weight"].shape[0] // 2, 32)
    merged = merge_shards(shards)
    assert merged.keys() == full.keys()
    for k in full:
        torch.testing.assert_close(merged[k], full[k], rtol=0, atol=0)


def test_pipe_names_cover_the_gpt_exactly() -> None:
    gpt_names = set(GPT(CFG).state_dict())
    pipe = {"tied_modules.embed.weight", "4.weight"} | {
        f"{i + 1}.{k.split('.', 2)[2]}" for i in range(CFG.n_layers) for k in gpt_names if k.startswith(f"blocks.{i}.")}
    mapped = {gpt_name(n, CFG) for n in pipe}
    assert mapped | {"lm_head.weight"} == gpt_names  # the tied head has no weight of its own
    assert layer_prefix(CFG.n_layers + 2, CFG) == "lm_head"
    with pytest.raises(ValueError, match="does not exist"):
        layer_prefix(CFG.n_layers + 3, CFG)


def test_each_file_goes_to_its_writer() -> None:
    # PP=2 × DP=2 as DeepSpeed lays it out: rank = stage × 2 + replica; stage 0 has layers 0-1, stage 1 2-4.
    coords = [Coords(0, 0, 0, (0, 2)), Coords(1, 1, 0, (0, 2)), Coords(2, 0, 1, (2, 5)), Coords(3, 1, 1, (2, 5))]
    owner = owner_map(coords)
    assert owner("zero_pp_rank_1_mp_rank_01_optim_states.pt") == 3
    assert owner("zero_pp_rank_1_mp_rank_00_optim_states.pt") == 1
    assert owner("mp_rank_01_model_states.pt") == 2
    assert owner("layer_03-model_states.pt") == 2 and owner("layer_01-model_states.pt") == 0
    assert owner("kiln_rank_00003.pt") == 3 and owner("model_config.json") == 0
    with pytest.raises(ValueError, match="layer 7"):
        owner("layer_07-model_states.pt")
