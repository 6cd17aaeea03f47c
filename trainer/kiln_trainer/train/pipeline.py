"""Pipeline parallelism: the GPT as a DeepSpeed ``PipelineModule`` and the step that drives it.

The model is a list of layer specs, each built only on the stage that owns it: the token embedding,
the blocks, the final norm and the output projection (tied to the embedding through a
``TiedLayerSpec``, so DeepSpeed all-reduces the shared weight's gradient between the first and last
stage). Stages are cut by parameter count; the engine runs ``gradient_accumulation_steps``
micro-batches through the pipe per optimizer step (1F1B), and ZeRO-1 partitions each stage's
optimizer state over its data-parallel replicas.

Every pipe layer keeps the parameter names of the matching :class:`GPT` module (``norm1.weight``,
``attn.q.weight``, ...), so one table (:mod:`kiln_trainer.train.pipeline_names`) moves weights
between the two: the initial weights come from the very GPT a data-parallel run of the same seed
builds (so the two runs start equal), and the export consolidates the per-layer checkpoint files
into the same state dict a data-parallel checkpoint gives.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from kiln_api.train_config import ModelConfig, TrainConfig
from torch import nn
from torch.utils.checkpoint import checkpoint

from kiln_trainer.train.data import IGNORE, micro_batch_start
from kiln_trainer.train.ds_config import deepspeed_config
from kiln_trainer.train.faults import PreemptionFlag
from kiln_trainer.train.loop import Trainer
from kiln_trainer.train.model import GPT, GPTBlock, rope_tables
from kiln_trainer.train.pipeline_names import gpt_name
from kiln_trainer.train.schedule import lr_at


class EmbeddingPipe(nn.Embedding):
    """Token ids → embeddings (first stage); with tied weights also the output projection's weight."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg.vocab_size, cfg.d_model)
        self.p_drop = cfg.dropout

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return F.dropout(super().forward(tokens), self.p_drop, self.training)


def tied_head(embedding: EmbeddingPipe, x: torch.Tensor) -> torch.Tensor:
    """The output projection through the embedding's weight (GPT's tied lm_head)."""
    return F.linear(x, embedding.weight)


class BlockPipe(GPTBlock):
    """A GPT block that carries its own RoPE tables: only activations travel between stages."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        cos, sin = rope_tables(cfg.d_model // cfg.n_heads, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, self.rope_cos, self.rope_sin)


class NormPipe(nn.RMSNorm):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg.d_model, eps=cfg.norm_eps)


class HeadPipe(nn.Linear):
    """The untied output projection."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg.d_model, cfg.vocab_size, bias=False)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss the data-parallel loop computes (fp32 cross-entropy, IGNORE labels skipped)."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


def layer_specs(cfg: ModelConfig) -> list[Any]:
    """GPT as pipe layers: embedding, blocks, final norm, output projection (tied or not)."""
    from deepspeed.pipe import LayerSpec, TiedLayerSpec

    embed = TiedLayerSpec("embed", EmbeddingPipe, cfg) if cfg.tie_embeddings else LayerSpec(EmbeddingPipe, cfg)
    head = (TiedLayerSpec("embed", EmbeddingPipe, cfg, forward_fn=tied_head) if cfg.tie_embeddings
            else LayerSpec(HeadPipe, cfg))
    return [embed, *(LayerSpec(BlockPipe, cfg) for _ in range(cfg.n_layers)), LayerSpec(NormPipe, cfg), head]


def pipeline_module(cfg: TrainConfig) -> Any:
    """The PipelineModule of this rank's stage, partitioned by parameters over cfg.parallel.pipeline stages."""
    from deepspeed.pipe import PipelineModule

    return PipelineModule(
        layers=layer_specs(cfg.model), num_stages=cfg.parallel.pipeline, loss_fn=lm_loss,
        partition_method="parameters",
        # Per stage: recompute each block's activations in backward (torch's non-reentrant checkpoint
        # needs no DeepSpeed RNG tracker, which only exists for CUDA).
        activation_checkpoint_interval=1 if cfg.model.activation_checkpointing else 0,
        activation_checkpoint_func=functools.partial(checkpoint, use_reentrant=False),
        checkpointable_layers=["BlockPipe"],
    )


def load_gpt_weights(pipe: nn.Module, gpt: GPT) -> None:
    """Copy the weights of this stage's layers from a full GPT (strict: every stage parameter is set)."""
    source = gpt.state_dict()
    with torch.no_grad():
        for name, tensor in pipe.state_dict().items():
            tensor.copy_(source[gpt_name(name, gpt.cfg)])


def build_pipeline_engine(cfg: TrainConfig, gpt: GPT, world: int) -> Any:
    """A DeepSpeed PipelineEngine for this rank's stage, starting from ``gpt``'s weights."""
    import deepspeed

    pipe = pipeline_module(cfg)
    load_gpt_weights(pipe, gpt)
    engine, _, _, _ = deepspeed.initialize(model=pipe, model_parameters=[p for p in pipe.parameters()],
                                           config=deepspeed_config(cfg, world))
    return engine


class PipelineTrainer(Trainer):
    """The loop's trainer with a step that pushes all micro-batches through the pipe at once.

    ``rank``/``world`` are the data-parallel coordinates (every stage of one replica reads the same
    sequences; only the first stage uses the inputs and the last the labels).
    """

    def _micro_batches(self, position: int, count: int, sampler: Any, seed_parts: list[int]) -> Iterator[Any]:
        mb = self.cfg.batch.micro_batch_size
        for a in range(count):
            first = micro_batch_start(position, a, self.rank, self.world, mb)
            yield self._batch(sampler, first, [*seed_parts, first])

    def train_step(self, preempt: PreemptionFlag | None) -> tuple[float, float | None, float]:
        st = self.state
        st.position = self._next_position(st.position)
        lr = lr_at(st.step, self.total_steps, self.cfg.optim, self.cfg.schedule)
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        flag = torch.tensor([float(preempt is not None and preempt.set)])
        dist.all_reduce(flag)  # every stage stops at the same step
        self.preempted = bool(flag.item() > 0)
        loss = float(self.engine.train_batch(iter(self._micro_batches(st.position, self.accum, self.train_data, []))))
        st.position += self.cfg.batch.global_batch_size
        st.tokens += self.cfg.batch.global_batch_size * self.cfg.batch.seq_len
        st.step += 1
        if not math.isfinite(loss):
            # The pipe has already stepped; a non-finite loss poisons the weights, so count it towards
            # faults.max_nonfinite_steps (which fails the run) rather than pretend it was skipped.
            st.nonfinite_steps += 1
            self.nonfinite.skipped(st.step, st.nonfinite_steps)
        return loss, None, lr

    def _grad_norm_fallback(self) -> float | None:
        return None  # DeepSpeed's pipe engine reports the global norm over all stages

    @torch.no_grad()
    def evaluate(self) -> float:
        n = self.cfg.early_stop.eval_batches
        batches = self._micro_batches(0, n, self.val_data, [-1])
        loss = float(self.engine.eval_batch(batches, num_micro_batches=n))
        self.engine.train()
        return loss
