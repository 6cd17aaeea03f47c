"""The DeepSpeed config: one pure function of the typed config and the world size.

No hand-edited JSON anywhere: what DeepSpeed sees is `deepspeed_config(cfg, world_size)`, printed
at start. The batch arithmetic is `kiln_api.train_config.BATCH_RULE`, declared once.
"""

from __future__ import annotations

from typing import Any

from kiln_api.train_config import BatchShape, TrainConfig


def batch_arithmetic(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Gradient accumulation steps such that micro × accumulation × world = global (the declared batch rule)."""
    return BatchShape(global_batch, micro_batch, world_size).accumulation_steps()


def _zero_section(cfg: TrainConfig) -> dict[str, Any]:
    z = cfg.zero
    out: dict[str, Any] = {"stage": z.stage}
    if z.stage >= 1:
        out.update(
            overlap_comm=z.overlap_comm,
            contiguous_gradients=True,
            reduce_bucket_size=z.reduce_bucket_size,
            reduce_scatter=True,
        )
    if z.stage == 3:
        # Gather the full 16-bit weights on save so a checkpoint holds consolidated weights too.
        out["stage3_gather_16bit_weights_on_model_save"] = True
    if z.offload_optimizer:
        out["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if z.offload_params:
        out["offload_param"] = {"device": "cpu", "pin_memory": True}
    return out


def _precision_section(cfg: TrainConfig) -> dict[str, Any]:
    p = cfg.precision
    out: dict[str, Any] = {}
    if p.bf16:
        out["bf16"] = {"enabled": True}
        # Accumulating micro-batch gradients in bf16 loses precision (DeepSpeed #1800/#2352): keep fp32.
        out["data_types"] = {"grad_accum_dtype": "fp32"}
    if p.fp16:
        out["fp16"] = {
            "enabled": True,
            "loss_scale": 0,  # 0 = dynamic loss scaling
            "initial_scale_power": p.initial_scale_power,
            "loss_scale_window": p.loss_scale_window,
            "hysteresis": p.hysteresis,
            "min_loss_scale": p.min_loss_scale,
        }
    return out


def deepspeed_config(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """The config dict handed to `deepspeed.initialize` for this run on `world_size` ranks."""
    # The batch splits over data-parallel replicas; pipeline stages and tensor ranks of one replica share it.
    accum = batch_arithmetic(cfg.batch.global_batch_size, cfg.batch.micro_batch_size, cfg.data_parallel(world_size))
    o = cfg.optim
    ds: dict[str, Any] = {
        "train_batch_size": cfg.batch.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.batch.micro_batch_size,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": o.grad_clip,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": o.lr,
                "betas": [o.beta1, o.beta2],
                "eps": o.eps,
                "weight_decay": o.weight_decay,
                # Without offload, torch's AdamW avoids building DeepSpeed's fused CUDA/CPU kernels.
                "torch_adam": not cfg.zero.offload_optimizer,
                "adam_w_mode": True,
            },
        },
        "zero_optimization": _zero_section(cfg),
        # The loop logs through its own sinks; silence DeepSpeed's periodic prints.
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    ds.update(_precision_section(cfg))
    if cfg.model.activation_checkpointing:
        ds["activation_checkpointing"] = {
            "partition_activations": False,
            "contiguous_memory_optimization": False,
            "cpu_checkpointing": False,
        }
    return ds
