"""INT8 weights that stay INT8 in the serving process.

An exported INT8 version stores every matrix as int8 rows `W_q` plus one fp32 scale per row
(`export/quantize.py`). Here those tensors are kept as they are: `Int8Linear` and `Int8Embedding`
hold the int8 tensor and the scales, and turn them into floats only for the rows a forward pass
uses, one block of rows at a time. The resident weights are a quarter of fp32; the transient copy
is one block (about 512 KiB), never a whole layer and never the whole model.

Why blocks: `x @ (W_q * s)^T == (x @ W_q^T) * s`, so the scales are applied to the output columns
and only `W_q` needs converting. Converting a block that fits in the CPU's cache and multiplying it
at once runs close to the fp32 matmul's speed on a CPU without int8 dot products (measured on an
AVX2 EPYC: 1.1-1.5x the fp32 time per layer instead of 2.5-5x for converting the whole matrix).

The model is built with weight initialisation skipped (`SkipInit`): the float tensors the
constructor allocates are never written, so they never become resident, and they are dropped when
the int8 modules replace their owners. A 7B model would otherwise need its full fp32 size at load
before shrinking. (The `meta` device would do the same, but its first use imports torch's meta
kernels: ~150 MiB of RSS, more than a small model's weights.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from kiln_trainer.export.quantize import SCALE_SUFFIX

BLOCK_BYTES = 512 * 1024
"""Target size of one dequantized block of weight rows (fits a per-core L2 cache)."""


def block_rows(in_features: int) -> int:
    return max(16, BLOCK_BYTES // (4 * in_features))


class Int8Linear(nn.Module):
    """`y = x W^T + b` with `W` kept as int8 rows and one fp32 scale per row (output channel)."""

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight_int8.dtype != torch.int8 or weight_int8.dim() != 2:
            raise ValueError(f"Int8Linear: weight must be a 2-D int8 tensor, got {weight_int8.dtype} {tuple(weight_int8.shape)}")
        if scale.shape != (weight_int8.shape[0],):
            raise ValueError(f"Int8Linear: scale must have one entry per row ({weight_int8.shape[0]}), got {tuple(scale.shape)}")
        self.out_features, self.in_features = weight_int8.shape
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale.float())
        self.bias = None if bias is None else nn.Parameter(bias.float(), requires_grad=False)
        self.rows = block_rows(self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = torch.empty(flat.shape[0], self.out_features, dtype=x.dtype, device=x.device)
        for i in range(0, self.out_features, self.rows):
            block = self.weight_int8[i : i + self.rows].to(x.dtype)  # the one transient float copy
            torch.mm(flat, block.t(), out=y[:, i : i + self.rows])
        y.mul_(self.scale.to(x.dtype))
        if self.bias is not None:
            y.add_(self.bias.to(x.dtype))
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight=int8"


class Int8Embedding(nn.Module):
    """Token embedding with int8 rows: only the looked-up rows are converted to floats."""

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        if weight_int8.dtype != torch.int8 or weight_int8.dim() != 2 or scale.shape != (weight_int8.shape[0],):
            raise ValueError("Int8Embedding: needs a 2-D int8 weight and one scale per row")
        self.num_embeddings, self.embedding_dim = weight_int8.shape
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale.float())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight_int8).float() * F.embedding(ids, self.scale[:, None])

    def as_linear(self) -> Int8Linear:
        """The tied output head: the same int8 tensor and scales (no copy), used as a projection."""
        return Int8Linear(self.weight_int8, self.scale)


class SkipInit(TorchFunctionMode):
    """Within it, `torch.nn.init.*` leave their tensor as allocated (unwritten, so not resident)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__module__", "") == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def int8_state_keys(model: nn.Module) -> set[str]:
    """State-dict keys the int8 modules already hold (their tensors came with them, not from a load)."""
    return {f"{name}.{key}" for name, m in model.named_modules() if isinstance(m, Int8Linear | Int8Embedding)
            for key in m.state_dict()}


def _parent(root: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    head, _, leaf = dotted.rpartition(".")
    return (root.get_submodule(head) if head else root), leaf


def swap_int8_modules(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every plain nn.Linear / nn.Embedding whose weight is quantized in `sd` by its int8
    module (in place). Returns what is left to load normally: the other tensors, with quantized ones
    that belong to other modules (e.g. nn.MultiheadAttention's packed projection) dequantized."""
    rest = {k: v for k, v in sd.items() if not k.endswith(SCALE_SUFFIX)}
    for name, module in list(model.named_modules()):
        key = f"{name}.weight"
        scale = sd.get(key + SCALE_SUFFIX)
        if scale is None or type(module) not in (nn.Linear, nn.Embedding):
            continue  # subclasses (MHA's out_proj) are read directly by their owner: keep them float
        parent, leaf = _parent(model, name)
        weight = rest.pop(key)
        if isinstance(module, nn.Embedding):
            setattr(parent, leaf, Int8Embedding(weight, scale))
        else:
            setattr(parent, leaf, Int8Linear(weight, scale, rest.pop(f"{name}.bias", None)))
    for key in [k for k in rest if k + SCALE_SUFFIX in sd]:
        rest[key] = rest[key].float() * sd[key + SCALE_SUFFIX][:, None]
    return rest


def weight_dtypes(model: nn.Module) -> dict[str, int]:
    """Bytes of resident weights per dtype (parameters and buffers, shared tensors counted once)."""
    seen: set[int] = set()
    out: dict[str, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        key = str(t.dtype).removeprefix("torch.")
        out[key] = out.get(key, 0) + t.numel() * t.element_size()
    return out


def describe_weights(model: nn.Module) -> str:
    """`int8 3.2 MiB, float32 0.4 MiB`: the resident weights by dtype, largest first."""
    parts = sorted(weight_dtypes(model).items(), key=lambda kv: -kv[1])
    return ", ".join(f"{dtype} {size / 2**20:.3f} MiB" for dtype, size in parts)
