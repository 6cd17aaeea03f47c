"""Weight-only INT8: per-output-channel symmetric quantization of matrix weights.

Every 2-D weight (the Linear layers and the embedding, which the output head shares) is stored as
int8 `W_q` plus one fp32 scale per output row: W ≈ W_q * scale[:, None], scale = max|W_row| / 127.
Norm weights and other 1-D tensors stay fp32 (they are tiny and sensitive). On disk that is about
a quarter of fp32. At load the served model either dequantizes back to fp32 ("dequant") or hands
the Linear layers to torch's dynamic INT8 matmul ("dynamic"); `bench/bench_serving.py` measures both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch

SCALE_SUFFIX = ".int8_scale"


def quantize_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """int8 weights + fp32 scales for 2-D tensors; others unchanged (as fp32)."""
    out: dict[str, torch.Tensor] = {}
    for name, w in sd.items():
        if w.dim() == 2 and w.is_floating_point():
            w32 = w.float()
            scale = w32.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            out[name] = torch.round(w32 / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
            out[name + SCALE_SUFFIX] = scale.contiguous()
        else:
            out[name] = w.float().contiguous()
    return out


def is_quantized(sd: dict[str, torch.Tensor]) -> bool:
    return any(k.endswith(SCALE_SUFFIX) for k in sd)


def dequantize_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Back to fp32 tensors under the original names."""
    out: dict[str, torch.Tensor] = {}
    for name, w in sd.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = sd.get(name + SCALE_SUFFIX)
        out[name] = w.float() * scale[:, None] if scale is not None else w
    return out


def dynamic_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Swap nn.Linear for torch's dynamic-quantized Linear (int8 weights, int8 matmul on CPU)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=False)


def tensor_bytes(sd: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in sd.values())


def perplexity(
    logits_fn: Callable[[torch.Tensor], torch.Tensor], token_windows: Iterable[Sequence[int]]
) -> float:
    """exp(mean next-token cross-entropy) over the windows; each window is one forward pass."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for window in token_windows:
            ids = torch.tensor([list(window)], dtype=torch.long)
            if ids.shape[1] < 2:
                continue
            logits = logits_fn(ids[:, :-1]).float()
            loss = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="sum")
            total += float(loss)
            count += ids.shape[1] - 1
    if count == 0:
        raise ValueError("eval_text_uri: the evaluation text yields no token pairs to score")
    return math.exp(total / count)


def windows(tokens: Sequence[int], size: int, limit: int = 64) -> list[list[int]]:
    """Non-overlapping windows of at most `size` tokens (at most `limit` of them, to bound export time)."""
    return [list(tokens[i : i + size]) for i in range(0, len(tokens), size)][:limit]
