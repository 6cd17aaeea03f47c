"""Tensor parallelism for the GPT block (Megatron-style), trained under the DeepSpeed engine.

Each of T ranks holds n_heads/T query heads, n_kv_heads/T key/value heads and ffn/T of the SwiGLU
width: ``q``, ``kv`` and ``gate_up`` are split by output rows (column parallel), ``out`` and ``down``
by input columns (row parallel). Two conjugate collectives make the block exact: the block input
enters through :class:`_CopyToTensorRanks` (identity forward, all-reduce of the gradient backward)
and the partial outputs of ``out``/``down`` leave through :class:`_SumOverTensorRanks` (all-reduce
forward, identity backward). Embedding, norms and the output projection stay whole on every rank.

DeepSpeed composes with this through its model-parallel unit (``mpu``, :class:`TensorParallelGroups`):
gradients are averaged and ZeRO partitions over the data-parallel group only, the gradient norm
sums the split parameters over the tensor group (they carry ``tensor_model_parallel``), and each
tensor rank saves ``mp_rank_<t>_model_states.pt``. The shards are cut from the full GPT a
data-parallel run of the same seed builds, so both start from the same weights; :func:`merge_shards`
puts the saved shards back into that GPT's state dict for export.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from kiln_api.train_config import TrainConfig
from torch import nn

from kiln_trainer.train.model import GPT, apply_rope


class _CopyToTensorRanks(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _SumOverTensorRanks(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        x = x.contiguous()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


# --- how each weight is split (rank r of t) ------------------------------------------------------

def _rows(w: torch.Tensor, r: int, t: int, groups: int = 1) -> torch.Tensor:
    """Rows of each of ``groups`` stacked blocks (k|v, gate|up), split t ways: rank r's part of each."""
    blocks = w.view(groups, -1, w.shape[-1])
    n = blocks.shape[1] // t
    return blocks[:, r * n:(r + 1) * n].reshape(-1, w.shape[-1]).clone()


def _cols(w: torch.Tensor, r: int, t: int) -> torch.Tensor:
    n = w.shape[1] // t
    return w[:, r * n:(r + 1) * n].clone()


SPLITS: dict[str, tuple[str, int]] = {
    # block-relative weight → (how it is split, stacked blocks along the rows)
    "attn.q.weight": ("rows", 1),
    "attn.kv.weight": ("rows", 2),
    "attn.out.weight": ("cols", 1),
    "mlp.gate_up.weight": ("rows", 2),
    "mlp.down.weight": ("cols", 1),
}


def _split_kind(name: str) -> tuple[str, int] | None:
    parts = name.split(".")
    return SPLITS.get(".".join(parts[2:])) if parts[0] == "blocks" else None


def shard(name: str, w: torch.Tensor, r: int, t: int) -> torch.Tensor:
    kind = _split_kind(name)
    if kind is None:
        return w
    return _rows(w, r, t, kind[1]) if kind[0] == "rows" else _cols(w, r, t)


def merge_shards(shards: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The full GPT state dict from the T tensor ranks' state dicts (inverse of :func:`shard`)."""
    out: dict[str, torch.Tensor] = {}
    for name, first in shards[0].items():
        kind = _split_kind(name)
        if kind is None:
            out[name] = first
        elif kind[0] == "cols":
            out[name] = torch.cat([s[name] for s in shards], dim=1)
        else:  # undo per block: [k_0|v_0], [k_1|v_1] → [k_0 k_1 | v_0 v_1]
            groups = kind[1]
            parts = [s[name].view(groups, -1, first.shape[-1]) for s in shards]
            out[name] = torch.cat(parts, dim=1).reshape(-1, first.shape[-1])
    return out


# --- the split modules --------------------------------------------------------------------------

class TensorParallelAttention(nn.Module):
    """This rank's heads of :class:`kiln_trainer.train.model.Attention` (same parameter names)."""

    def __init__(self, full: nn.Module, r: int, t: int, group: Any) -> None:
        super().__init__()
        self.group, self.head_dim = group, full.head_dim
        self.n_heads, self.n_kv = full.n_heads // t, full.n_kv // t
        self.causal, self.dropout = full.causal, full.dropout
        self.q = nn.Linear(full.q.in_features, self.n_heads * self.head_dim, bias=False)
        self.kv = nn.Linear(full.kv.in_features, 2 * self.n_kv * self.head_dim, bias=False)
        self.out = nn.Linear(self.n_heads * self.head_dim, full.out.out_features, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        x = _CopyToTensorRanks.apply(x, self.group)
        q = self.q(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(b, s, 2, self.n_kv, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.n_kv != self.n_heads:
            rep = self.n_heads // self.n_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, dropout_p=drop)
        partial = self.out(y.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim))
        return _SumOverTensorRanks.apply(partial, self.group)


class TensorParallelSwiGLU(nn.Module):
    """This rank's slice of the SwiGLU width (same parameter names as the full MLP)."""

    def __init__(self, full: nn.Module, t: int, group: Any) -> None:
        super().__init__()
        self.group = group
        width = full.down.in_features // t
        self.gate_up = nn.Linear(full.gate_up.in_features, 2 * width, bias=False)
        self.down = nn.Linear(width, full.down.out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _CopyToTensorRanks.apply(x, self.group)
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return _SumOverTensorRanks.apply(self.down(F.silu(gate) * up), self.group)


class TensorParallelGroups:
    """DeepSpeed's model-parallel unit for T tensor ranks × D data-parallel replicas.

    Rank g is tensor rank g % T of replica g // T: a replica's tensor ranks are neighbours (one pod's
    processes when T divides processes per pod), so the per-layer all-reduces stay inside a pod.
    """

    def __init__(self, rank: int, world: int, tensor: int) -> None:
        self.rank, self.world, self.tensor = rank, world, tensor
        self.replicas = world // tensor
        # new_group is collective: every rank creates every group, in the same order.
        tp = [dist.new_group(list(range(d * tensor, (d + 1) * tensor))) for d in range(self.replicas)]
        dp = [dist.new_group(list(range(t, world, tensor))) for t in range(tensor)]
        self._tp, self._dp = tp[rank // tensor], dp[rank % tensor]

    def get_model_parallel_rank(self) -> int:
        return self.rank % self.tensor

    def get_model_parallel_world_size(self) -> int:
        return self.tensor

    def get_model_parallel_group(self) -> Any:
        return self._tp

    get_tensor_model_parallel_rank = get_model_parallel_rank
    get_tensor_model_parallel_world_size = get_model_parallel_world_size
    get_tensor_model_parallel_group = get_model_parallel_group

    def get_data_parallel_rank(self) -> int:
        return self.rank // self.tensor

    def get_data_parallel_world_size(self) -> int:
        return self.replicas

    def get_data_parallel_group(self) -> Any:
        return self._dp


def split_model(gpt: GPT, groups: TensorParallelGroups) -> GPT:
    """``gpt`` with every block's attention and MLP replaced by this rank's shard of their weights."""
    r, t, group = groups.get_model_parallel_rank(), groups.tensor, groups.get_model_parallel_group()
    full = gpt.state_dict()
    for i, block in enumerate(gpt.blocks):
        block.attn = TensorParallelAttention(block.attn, r, t, group)
        block.mlp = TensorParallelSwiGLU(block.mlp, t, group)
        with torch.no_grad():
            for name, p in list(block.attn.named_parameters(prefix=f"blocks.{i}.attn")) + list(
                    block.mlp.named_parameters(prefix=f"blocks.{i}.mlp")):
                p.copy_(shard(name, full[name], r, t))
                p.tensor_model_parallel = True  # type: ignore[attr-defined]  # DeepSpeed's norm sums these over ranks
    return gpt


def build_tensor_parallel_engine(cfg: TrainConfig, gpt: GPT, rank: int, world: int) -> Any:
    import deepspeed

    from kiln_trainer.train.ds_config import deepspeed_config

    if cfg.model.ffn_width % cfg.parallel.tensor:
        raise ValueError(f"model.ffn_hidden: {cfg.model.ffn_width} is not divisible by parallel.tensor="
                         f"{cfg.parallel.tensor}")
    groups = TensorParallelGroups(rank, world, cfg.parallel.tensor)
    model = split_model(gpt, groups)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), mpu=groups,
                                           config=deepspeed_config(cfg, world))
    return engine
