"""The trainer's typed configuration: one tree of dataclasses, validated on construction.

Both sides import this module: the operator writes a config file from a TrainingRun spec, the
trainer (`kiln-trainer train --config FILE`) reads it back with `TrainConfig.from_dict`. Every
error names the field it is about (``model.n_heads: ...``), and everything that can be checked
without data or hardware is checked here, before any compute starts. Checks that need the world
size or the dataset's tokenizer live in `TrainConfig.check_world` / `TrainConfig.check_data`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, get_args

from kiln_api.rules import F, Rule, all_of, any_of, check_rules, has, implies, lit, not_
from kiln_api.specfields import SpecError
from kiln_api.specfields import hints as type_hints

ConfigError = SpecError
"""The old name of kiln_api's one error type (kept so trainer code reads on; prefer SpecError)."""


def _fail(path: str, msg: str) -> SpecError:
    return SpecError(path, msg)


def _positive(path: str, value: float) -> None:
    if value <= 0:
        raise _fail(path, f"must be > 0, got {value}")


def _non_negative(path: str, value: float) -> None:
    if value < 0:
        raise _fail(path, f"must be >= 0, got {value}")


Arch = Literal["gpt", "classic"]
Objective = Literal["causal", "masked"]
ResumeMode = Literal["auto", "required", "never"]


@dataclass
class ModelConfig:
    """Shape of the network. Saved as ``model_config.json`` beside every checkpoint's weights."""

    vocab_size: int = 512
    """Embedding rows; must be >= the dataset tokenizer's vocabulary."""
    d_model: int = 64
    """Hidden width."""
    n_layers: int = 2
    """Number of transformer blocks."""
    n_heads: int = 4
    """Query heads; d_model must be divisible by it."""
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention (None = n_heads, i.e. plain multi-head)."""
    ffn_hidden: int | None = None
    """Feed-forward width (None = 8/3·d_model for SwiGLU or 4·d_model for the classic block, rounded up to 64)."""
    max_seq_len: int = 128
    """Longest sequence the model accepts (RoPE cache / sinusoid table length)."""
    arch: Arch = "gpt"
    """'gpt': pre-norm RMSNorm, RoPE, SwiGLU, SDPA. 'classic': post-LayerNorm, sinusoidal positions,
    nn.MultiheadAttention, GELU MLP."""
    objective: Objective = "causal"
    """'causal' next-token LM, or 'masked' LM with a masking ratio drawn per batch in [0.15, 0.25]."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""
    norm_eps: float = 1e-5
    """Epsilon of RMSNorm / LayerNorm."""
    dropout: float = 0.0
    """Dropout probability (0 for pre-training)."""
    tie_embeddings: bool = True
    """Share the input embedding with the output projection."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward to save memory."""
    init_std: float = 0.02
    """Standard deviation of the normal weight initialisation."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(F.d_model % F.n_heads == 0, "n_heads", "{d_model} is not divisible by {n_heads}"),
        # RoPE rotates pairs of channels, so each head needs an even width.
        Rule(implies(F.arch == "gpt", (F.d_model // F.n_heads) % 2 == 0), "n_heads",
             "RoPE needs an even head size: {d_model} / {n_heads} is odd"),
        Rule(implies(has(F.n_kv_heads), F.n_heads % F.n_kv_heads == 0), "n_kv_heads",
             "{n_kv_heads} must divide {n_heads}"),
        Rule(implies(all_of(has(F.n_kv_heads), F.arch == "classic"), F.n_kv_heads == F.n_heads), "n_kv_heads",
             "grouped-query attention ({n_kv_heads} < {n_heads}) needs arch 'gpt'"),
    )

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            _positive(f"model.{name}", getattr(self, name))
        if self.arch not in get_args(Arch):
            raise _fail("model.arch", f"must be one of {get_args(Arch)}, got {self.arch!r}")
        if self.objective not in get_args(Objective):
            raise _fail("model.objective", f"must be one of {get_args(Objective)}, got {self.objective!r}")
        if self.n_kv_heads is not None:
            _positive("model.n_kv_heads", self.n_kv_heads)
        check_rules(self, "model")
        if self.ffn_hidden is not None:
            _positive("model.ffn_hidden", self.ffn_hidden)
        if not 0.0 <= self.dropout < 1.0:
            raise _fail("model.dropout", f"must be in [0, 1), got {self.dropout}")
        _positive("model.norm_eps", self.norm_eps)
        _positive("model.rope_theta", self.rope_theta)
        _positive("model.init_std", self.init_std)

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def ffn_width(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        raw = 4 * self.d_model if self.arch == "classic" else (8 * self.d_model) // 3
        return -(-raw // 64) * 64


@dataclass
class OptimConfig:
    """AdamW settings."""

    lr: float = 3e-3
    """Peak learning rate (reached at the end of warmup)."""
    weight_decay: float = 0.1
    """Decoupled weight decay."""
    beta1: float = 0.9
    """Adam beta1."""
    beta2: float = 0.95
    """Adam beta2."""
    eps: float = 1e-8
    """Adam epsilon."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 = off)."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(F.lr > 0.0, "lr", "{lr} must be > 0"),
        # beta = 1 would never forget the first gradient (Adam's bias correction divides by 1 - beta^t = 0).
        Rule(all_of(F.beta1 >= 0.0, F.beta1 < 1.0), "beta1", "{beta1} must be in [0, 1)"),
        Rule(all_of(F.beta2 >= 0.0, F.beta2 < 1.0), "beta2", "{beta2} must be in [0, 1)"),
    )

    def __post_init__(self) -> None:
        _non_negative("optim.weight_decay", self.weight_decay)
        _non_negative("optim.grad_clip", self.grad_clip)
        _positive("optim.eps", self.eps)
        check_rules(self, "optim")


@dataclass
class ScheduleConfig:
    """Linear warmup, then cosine decay to a floor; the budget in steps or tokens."""

    warmup_steps: int = 10
    """Steps of linear warmup from 0 to optim.lr."""
    min_lr_ratio: float = 0.1
    """The cosine ends at optim.lr × this."""
    max_steps: int | None = 100
    """Optimizer steps to run (exactly one of max_steps / max_tokens)."""
    max_tokens: int | None = None
    """Training tokens to consume; converted to steps with the global batch."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(has(F.max_steps) != has(F.max_tokens), "max_steps", "set exactly one of {max_steps} and {max_tokens}"),
    )

    def __post_init__(self) -> None:
        _non_negative("schedule.warmup_steps", self.warmup_steps)
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise _fail("schedule.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        check_rules(self, "schedule")
        if self.max_steps is not None:
            _positive("schedule.max_steps", self.max_steps)
        if self.max_tokens is not None:
            _positive("schedule.max_tokens", self.max_tokens)


BATCH_RULE = Rule(
    F.global_batch_size % (F.micro_batch_size * F.world_size) == 0, "global_batch_size",
    "{global_batch_size} is not a multiple of {micro_batch_size} × {world_size}",
)
"""The one batch rule (DeepSpeed asserts train_batch = micro × accumulation × world)."""


@dataclass(frozen=True)
class BatchShape:
    """The batch as DeepSpeed sees it on a given world size."""

    global_batch_size: int
    """Sequences per optimizer step, summed over all ranks."""
    micro_batch_size: int
    """Sequences per forward pass on one rank."""
    world_size: int
    """Data-parallel ranks."""

    RULES: ClassVar[tuple[Rule, ...]] = (BATCH_RULE,)

    def accumulation_steps(self) -> int:
        """Gradient accumulation such that micro × accumulation × world = global (raises SpecError)."""
        for name in ("global_batch_size", "micro_batch_size", "world_size"):
            _positive(name, getattr(self, name))
        check_rules(self, "batch")
        return self.global_batch_size // (self.micro_batch_size * self.world_size)


@dataclass
class BatchConfig:
    """Global batch = micro_batch_size × gradient accumulation × world size (sequences)."""

    global_batch_size: int = 8
    """Sequences per optimizer step, summed over all ranks."""
    micro_batch_size: int = 4
    """Sequences per forward pass on one rank."""
    seq_len: int = 64
    """Tokens per training sequence; at most model.max_seq_len."""

    # A world of one device: the least the batch must divide into (the real world is checked at launch).
    RULES: ClassVar[tuple[Rule, ...]] = (BATCH_RULE.onto({"world_size": lit(1)}),)

    def __post_init__(self) -> None:
        for name in ("global_batch_size", "micro_batch_size", "seq_len"):
            _positive(f"batch.{name}", getattr(self, name))
        check_rules(self, "batch")


WORLD_RULE = Rule(
    F.world_size % (F.pipeline * F.tensor) == 0, "world_size",
    "{world_size} ranks do not split into data-parallel groups of {pipeline} pipeline stages × {tensor} tensor ranks",
)
"""The one world rule: ranks = data parallel × pipeline × tensor."""


@dataclass(frozen=True)
class ParallelShape:
    """How a world of ranks is laid out: data-parallel replicas of a pipeline × tensor model."""

    world_size: int
    """All ranks (pods × processes per pod)."""
    pipeline: int
    """Pipeline stages."""
    tensor: int
    """Tensor-parallel ranks per stage."""

    RULES: ClassVar[tuple[Rule, ...]] = (WORLD_RULE,)

    def data_parallel(self) -> int:
        """Data-parallel replicas (raises SpecError when the world does not split)."""
        check_rules(self, "parallel")
        return self.world_size // (self.pipeline * self.tensor)


@dataclass
class ParallelConfig:
    """Model parallelism; the ranks left over (world / (pipeline × tensor)) are data parallel."""

    pipeline: int = 1
    """Pipeline stages (DeepSpeed's pipeline engine); the layers are split across them by parameter count."""
    tensor: int = 1
    """Tensor-parallel ranks: each GPT block's attention heads and MLP width are split across them."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        # Both at once needs DeepSpeed's pipe grid to carry a tensor axis through our layers: not built yet.
        Rule(any_of(F.pipeline == 1, F.tensor == 1), "tensor",
             "{pipeline} > 1 together with {tensor} > 1 is not supported yet; use one of them"),
    )

    def __post_init__(self) -> None:
        _positive("parallel.pipeline", self.pipeline)
        _positive("parallel.tensor", self.tensor)
        check_rules(self, "parallel")


PARALLEL_MODEL_RULES: tuple[Rule, ...] = (
    Rule(F.model.n_layers >= F.parallel.pipeline, "parallel.pipeline",
         "{parallel.pipeline} stages need at least as many layers, got {model.n_layers}"),
    Rule(F.model.n_heads % F.parallel.tensor == 0, "parallel.tensor",
         "{model.n_heads} is not divisible by {parallel.tensor}"),
    Rule(implies(has(F.model.n_kv_heads), F.model.n_kv_heads % F.parallel.tensor == 0), "parallel.tensor",
         "{model.n_kv_heads} is not divisible by {parallel.tensor}"),
)
"""What a model needs to be split: declared over TrainConfig, projected onto a custom shape in the spec."""

PARALLEL_NEEDS_GPT = Rule(
    # The pipeline stages and tensor-parallel layers are built from the GPT block only.
    implies(F.parallel.pipeline * F.parallel.tensor > 1, F.model.arch == "gpt"), "model.arch",
    "{parallel.pipeline} × {parallel.tensor} model parallelism needs arch 'gpt', got {model.arch}",
)
PARALLEL_NO_DISTILL = Rule(
    # The teacher's logits would have to meet the student's on the last stage / every tensor rank.
    implies(has(F.distill.teacher), F.parallel.pipeline * F.parallel.tensor == 1), "parallel.pipeline",
    "distillation runs data parallel only: {parallel.pipeline} × {parallel.tensor} must be 1",
)


@dataclass
class PrecisionConfig:
    """Mixed precision. bf16 accumulates gradients in fp32; fp16 uses dynamic loss scaling."""

    bf16: bool = False
    """Train in bfloat16 (no loss scaling needed)."""
    fp16: bool = False
    """Train in float16 with dynamic loss scaling."""
    initial_scale_power: int = 16
    """fp16: the first loss scale is 2**this."""
    loss_scale_window: int = 1000
    """fp16: steps without overflow before the scale is raised."""
    hysteresis: int = 2
    """fp16: overflows tolerated before the scale is lowered."""
    min_loss_scale: float = 1.0
    """fp16: the scale never goes below this."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(not_(all_of(F.bf16, F.fp16)), "fp16", "fp16 and bf16 cannot both be enabled; pick one"),
    )

    def __post_init__(self) -> None:
        check_rules(self, "precision")
        _non_negative("precision.initial_scale_power", self.initial_scale_power)
        _positive("precision.loss_scale_window", self.loss_scale_window)
        _positive("precision.hysteresis", self.hysteresis)
        _positive("precision.min_loss_scale", self.min_loss_scale)


@dataclass
class ZeroConfig:
    """DeepSpeed ZeRO partitioning and offload."""

    stage: int = 0
    """0 (plain data parallel) to 3 (parameters partitioned too)."""
    offload_optimizer: bool = False
    """Keep optimizer states (and the step) on the CPU; needs stage >= 1."""
    offload_params: bool = False
    """Keep parameters on the CPU; needs stage 3."""
    overlap_comm: bool = True
    """Overlap gradient reduction with backward."""
    reduce_bucket_size: int = 50_000_000
    """Elements per gradient reduction bucket."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(implies(F.offload_params, F.stage == 3), "offload_params", "parameter offload needs {stage} = 3"),
        Rule(implies(F.offload_optimizer, F.stage >= 1), "offload_optimizer", "optimizer offload needs {stage} >= 1"),
    )

    def __post_init__(self) -> None:
        if self.stage not in (0, 1, 2, 3):
            raise _fail("zero.stage", f"must be 0, 1, 2 or 3, got {self.stage}")
        check_rules(self, "zero")
        _positive("zero.reduce_bucket_size", self.reduce_bucket_size)


@dataclass
class CheckpointConfig:
    """Atomic checkpoints in the run's storage (files → manifest → commit marker → latest)."""

    every_steps: int = 50
    """Save every this many optimizer steps (and at the end)."""
    keep_last: int = 2
    """Committed checkpoints kept; older ones are deleted after a newer one commits."""
    resume: ResumeMode = "auto"
    """'auto': resume from the newest valid committed checkpoint if one exists; 'required': fail if
    none exists; 'never': always start fresh (refused when committed checkpoints exist)."""
    local_dir: str = "/tmp/kiln-ckpt"
    """Local scratch folder each rank saves into before upload."""
    upload_concurrency: int = 8
    """Parallel upload threads (and multipart parts in flight per file)."""
    async_upload: bool = True
    """Upload in a background thread while training goes on (the local files are immutable)."""
    init_from: str | None = None
    """Continual learning: a checkpoint or exported-model folder (file:// or s3://) whose weights
    initialise the model; optimizer state starts fresh."""

    def __post_init__(self) -> None:
        _positive("checkpoint.every_steps", self.every_steps)
        _positive("checkpoint.keep_last", self.keep_last)
        _positive("checkpoint.upload_concurrency", self.upload_concurrency)
        if self.resume not in get_args(ResumeMode):
            raise _fail("checkpoint.resume", f"must be one of {get_args(ResumeMode)}, got {self.resume!r}")


@dataclass
class EarlyStopConfig:
    """Evaluation on the validation split and early stopping."""

    eval_every_steps: int = 25
    """Evaluate every this many steps (0 = never)."""
    eval_batches: int = 4
    """Micro-batches per evaluation on each rank."""
    patience: int = 0
    """Stop after this many evaluations without improvement (0 = never stop early)."""
    min_delta: float = 0.0
    """An improvement must lower validation loss by more than this."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(implies(F.patience > 0, F.eval_every_steps > 0), "patience", "needs {eval_every_steps} > 0"),
    )

    def __post_init__(self) -> None:
        _non_negative("early_stop.eval_every_steps", self.eval_every_steps)
        _positive("early_stop.eval_batches", self.eval_batches)
        _non_negative("early_stop.patience", self.patience)
        _non_negative("early_stop.min_delta", self.min_delta)
        check_rules(self, "early_stop")


@dataclass
class DistillConfig:
    """Knowledge distillation from a frozen teacher (off unless teacher is set)."""

    teacher: str | None = None
    """Checkpoint or exported-model folder (file:// or s3://) holding model_config.json + weights."""
    temperature: float = 2.0
    """Softmax temperature T of the KL term (scaled by T²)."""
    alpha: float = 0.5
    """Loss = alpha · KL + (1 − alpha) · cross-entropy."""

    def __post_init__(self) -> None:
        _positive("distill.temperature", self.temperature)
        if not 0.0 <= self.alpha <= 1.0:
            raise _fail("distill.alpha", f"must be in [0, 1], got {self.alpha}")


@dataclass
class FaultConfig:
    """What the loop does about bad steps and preemption."""

    max_nonfinite_steps: int = 20
    """Steps with a NaN/inf loss that are skipped before the run fails."""
    spike_factor: float = 3.0
    """A loss above this × the running mean is a spike (0 = off)."""
    spike_window: int = 20
    """Good steps in the running mean; spikes are only detected once it is full."""
    max_rollbacks: int = 3
    """Rollbacks to the last committed checkpoint before spikes are only warned about."""
    sigterm_grace_seconds: float = 30.0
    """Time the pod gets after SIGTERM (terminationGracePeriodSeconds); logged with the save time."""

    def __post_init__(self) -> None:
        _non_negative("faults.max_nonfinite_steps", self.max_nonfinite_steps)
        _non_negative("faults.spike_factor", self.spike_factor)
        if self.spike_factor and self.spike_factor <= 1.0:
            raise _fail("faults.spike_factor", f"must be > 1 (or 0 = off), got {self.spike_factor}")
        _positive("faults.spike_window", self.spike_window)
        _non_negative("faults.max_rollbacks", self.max_rollbacks)
        _positive("faults.sigterm_grace_seconds", self.sigterm_grace_seconds)


@dataclass
class MonitorConfig:
    """Where metrics go. Every sink is optional."""

    log_every: int = 10
    """Write a metrics record every this many steps."""
    prometheus_port: int = 0
    """Serve /metrics on this port on rank 0 (0 = off)."""
    tensorboard: bool = True
    """Write TensorBoard events into the local checkpoint folder's tb/ and upload them."""
    progress_file: str | None = None
    """Also write the compact progress record to this local path (e.g. for a sidecar)."""
    peak_tflops: float | None = None
    """Accelerator peak TFLOP/s for MFU (None = guess from the GPU name; CPU = no MFU)."""

    def __post_init__(self) -> None:
        _positive("monitor.log_every", self.log_every)
        if not 0 <= self.prometheus_port <= 65535:
            raise _fail("monitor.prometheus_port", f"must be in 0..65535, got {self.prometheus_port}")
        if self.peak_tflops is not None:
            _positive("monitor.peak_tflops", self.peak_tflops)


@dataclass
class DataConfig:
    """The prepared dataset and how it is sampled."""

    path: str = ""
    """Dataset folder (file:// or s3://, or a local path) with manifest.json and token shards."""
    train_split: str = "train"
    """Split trained on."""
    val_split: str = "val"
    """Split evaluated on."""
    seed: int = 1234
    """Seed of the window order (same seed + same world → same data order)."""

    def __post_init__(self) -> None:
        if not self.path:
            raise _fail("data.path", "is required (the prepared dataset folder)")


BF16_NEEDS_ZERO = Rule(
    # DeepSpeed accumulates bf16 gradients in fp32 only inside its ZeRO optimizers; plain data
    # parallel would accumulate in bf16 and lose precision (DeepSpeed #1800/#2352).
    implies(F.precision.bf16, F.zero.stage >= 1), "precision.bf16", "needs {zero.stage} >= 1 (fp32 gradient accumulation)",
)


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    run: str
    """Run name; checkpoints go to <storage_uri>/runs/<run>/."""
    storage_uri: str
    """Root of the run's storage (s3://bucket/prefix or file:///abs/dir)."""
    data: DataConfig
    """The dataset."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The network."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """The optimizer."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Learning-rate schedule and budget."""
    batch: BatchConfig = field(default_factory=BatchConfig)
    """Batch sizes."""
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    """Mixed precision."""
    zero: ZeroConfig = field(default_factory=ZeroConfig)
    """ZeRO stage and offload."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpointing and resume."""
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    """Evaluation and early stopping."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Distillation (off by default)."""
    faults: FaultConfig = field(default_factory=FaultConfig)
    """Fault handling."""
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    """Metric sinks."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Pipeline and tensor parallelism (default: data parallel only)."""
    seed: int = 0
    """Seed of model initialisation and masking."""

    def __post_init__(self) -> None:
        if not self.run or "/" in self.run:
            raise _fail("run", f"must be a non-empty name without '/', got {self.run!r}")
        if not self.storage_uri.startswith(("s3://", "file://")):
            raise _fail("storage_uri", f"must start with s3:// or file://, got {self.storage_uri!r}")
        check_rules(self)

    RULES: ClassVar[tuple[Rule, ...]] = (
        BF16_NEEDS_ZERO,
        Rule(F.batch.seq_len <= F.model.max_seq_len, "batch.seq_len", "{batch.seq_len} is longer than {model.max_seq_len}"),
        *PARALLEL_MODEL_RULES, PARALLEL_NEEDS_GPT, PARALLEL_NO_DISTILL,
    )

    def data_parallel(self, world_size: int) -> int:
        """Data-parallel replicas in a world of ``world_size`` ranks (raises SpecError if it does not split)."""
        return ParallelShape(world_size, self.parallel.pipeline, self.parallel.tensor).data_parallel()

    def check_world(self, world_size: int) -> int:
        """Validate against the world size; returns the gradient accumulation steps."""
        dp = self.data_parallel(world_size)
        return BatchShape(self.batch.global_batch_size, self.batch.micro_batch_size, dp).accumulation_steps()

    def check_data(self, vocab_size: int, mask_id: int | None) -> None:
        """Validate against the dataset's tokenizer (from its manifest)."""
        if vocab_size > self.model.vocab_size:
            raise _fail(
                "model.vocab_size",
                f"{self.model.vocab_size} is smaller than the dataset tokenizer's vocab_size={vocab_size}",
            )
        if self.model.objective == "masked" and mask_id is None:
            raise _fail("model.objective", "'masked' needs a tokenizer with a mask token (manifest mask_id)")

    def total_steps(self) -> int:
        """Optimizer steps in the budget (tokens are rounded up to whole steps)."""
        if self.schedule.max_steps is not None:
            return self.schedule.max_steps
        assert self.schedule.max_tokens is not None  # guaranteed by ScheduleConfig
        per_step = self.batch.global_batch_size * self.batch.seq_len
        return -(-self.schedule.max_tokens // per_step)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        return _build(cls, raw, "")

    def compat_hash(self) -> str:
        """Hash of what a checkpoint's state depends on; a resume under another value is refused."""
        keep = {
            "model": dataclasses.asdict(self.model),
            "batch": dataclasses.asdict(self.batch),
            "data_seed": self.data.seed,
            "zero_stage": self.zero.stage,
        }
        if self.parallel != ParallelConfig():  # data-parallel runs keep the hash their checkpoints carry
            keep["parallel"] = dataclasses.asdict(self.parallel)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


T = TypeVar("T")


def _build(cls: type[T], raw: Any, path: str) -> T:
    """Construct dataclass `cls` from a dict, naming unknown or mistyped fields by dotted path."""
    where = path or "config"
    if not isinstance(raw, dict):
        raise _fail(where, f"must be a mapping, got {type(raw).__name__}")
    hints = type_hints(cls)  # type: ignore[arg-type]  # a TypeVar bound to nothing is still a class here
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - names)
    if unknown:
        raise _fail(f"{path}.{unknown[0]}" if path else unknown[0], f"unknown field (known: {', '.join(sorted(names))})")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        sub = f"{path}.{key}" if path else key
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, sub)  # type: ignore[arg-type]
        else:
            kwargs[key] = _check_scalar(hint, value, sub)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a missing required field
        raise _fail(where, str(e)) from e


def _check_scalar(hint: Any, value: Any, path: str) -> Any:
    allowed = get_args(hint) or (hint,)
    if value is None and type(None) in allowed:
        return None
    literal_values = [a for a in allowed if not isinstance(a, type)]
    types = tuple(a for a in allowed if isinstance(a, type) and a is not type(None))
    if literal_values and not types:
        return value  # Literal: checked by __post_init__ with a better message
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if bool not in types and isinstance(value, bool):
        raise _fail(path, f"must be {' or '.join(t.__name__ for t in types)}, got a boolean")
    if types and not isinstance(value, types):
        raise _fail(path, f"must be {' or '.join(t.__name__ for t in types)}, got {type(value).__name__} {value!r}")
    return value
