"""Preflight: will a TrainingRun fit, how long will it take, what will it cost.

Memory per device follows the ZeRO paper (Rajbhandari et al., 2020, §3 and §5): with mixed precision
Adam a model of Ψ parameters holds 2Ψ bytes of 16-bit parameters, 2Ψ of 16-bit gradients and
KΨ = 12Ψ of fp32 optimizer state (master weights, momentum, variance). Over N_d data-parallel
devices each ZeRO stage partitions one more of them:

    stage 0: 2Ψ + 2Ψ + 12Ψ          stage 2: 2Ψ + (2Ψ + 12Ψ)/N_d
    stage 1: 2Ψ + 2Ψ + 12Ψ/N_d      stage 3: (2Ψ + 2Ψ + 12Ψ)/N_d

Pure fp32 training keeps 4Ψ + 4Ψ + 8Ψ (no separate master copy). Optimizer offload moves the
optimizer term to host memory; parameter offload (stage 3) moves the parameter term too.

Activations per layer follow Korthikanti et al. (2022), "Reducing Activation Recomputation":
s·b·h·(34 + 5·a·s/h) bytes for 16-bit training without recomputation (34·s·b·h when attention runs
in a fused kernel that keeps no score matrix); with full activation
checkpointing only the layer inputs (2·s·b·h per layer) are kept plus one layer being recomputed.
The logits add 4·s·b·V bytes (fp32 for the loss). A fixed framework overhead covers the CUDA
context and allocator slack.

FLOPs = 6·N·tokens (Kaplan et al.); time = FLOPs / (devices × peak × MFU).

Model parallelism (spec.training.parallelism, P pipeline stages × T tensor ranks): each device holds
about Ψ/(P·T) of the model (the embedding is on the first stage and replicated across tensor ranks:
the estimate ignores that skew) and ZeRO partitions over the N_d = devices/(P·T) data-parallel
replicas only. Tensor parallelism splits the per-layer activations to s·b·h·(10 + 24/T) (+ scores/T;
Korthikanti et al. Eq. 2, no sequence parallelism). With 1F1B a pipeline's first stage keeps P
micro-batches of its L/P layers in flight, i.e. about as much as one micro-batch of all L layers.
The pipeline bubble idles a fraction (P−1)/(m+P−1) of each step with m micro-batches per step
(GPipe/1F1B); the time estimate divides by 1 − bubble.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeVar

from kiln_api.compiler import resolve_spec
from kiln_api.estimate_calibration import Calibration
from kiln_api.presets import ACCELERATORS, GiB
from kiln_api.rules import check_tree
from kiln_api.train_config import ModelConfig
from kiln_api.train_presets import PRESETS as TRAIN_PRESETS
from kiln_api.trainingrun import ModelSpec, TrainingRunSpec, TrainingSpec, ZeroSpec

FRAMEWORK_OVERHEAD_BYTES = 1 * GiB
"""CUDA context, NCCL buffers and allocator fragmentation, per device."""
DEFAULT_MFU = 0.35
"""Model FLOPs utilization assumed for time estimates (torchtitan/OLMo report 0.33–0.48 on H100)."""
T = TypeVar("T")


def _set(value: T | None, name: str) -> T:
    """A field the preset decides; the estimate works on resolved specs (kiln_api.compiler.resolve_spec)."""
    if value is None:
        raise ValueError(f"training.{name} is unset: estimate a resolved spec (kiln_api.compiler.resolve_spec)")
    return value


_UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


@dataclass(frozen=True)
class Shape:
    """The network as the estimate sees it: the trainer's ModelConfig plus the training sequence length."""

    model: ModelConfig
    """Layers, width, heads, vocabulary (kiln_api.train_config)."""
    seq_len: int
    """Tokens per training sequence (s)."""


def model_shape(model: ModelSpec, vocab_size: int) -> Shape:
    """The spec's network; the tokenizer's vocabulary size overrides the preset's."""
    if model.custom is not None:
        c = model.custom
        cfg = ModelConfig(vocab_size=vocab_size, d_model=c.hidden, n_layers=c.layers, n_heads=c.heads,
                          n_kv_heads=c.kv_heads, ffn_hidden=c.ffn_hidden, max_seq_len=c.seq_len)
        return Shape(cfg, c.seq_len)
    preset = TRAIN_PRESETS[model.preset]()
    return Shape(replace(preset.model, vocab_size=vocab_size), preset.batch.seq_len)


def param_count(m: ModelConfig) -> int:
    """Ψ for the trainer's 'gpt' block (bias-free Linear layers, RMSNorm, SwiGLU):
    per layer 2h² (q, out) + 2·h·kv·d (k, v; d = h/heads) + 3·h·f (gate, up, down) + 2h (two RMSNorms),
    plus V·h embeddings (×2 when untied) and h for the final norm.

    The 'classic' block (nn.MultiheadAttention with biases, GELU MLP with biases, two LayerNorms)
    has 4h² + 4h attention, 2hf + f + h MLP, 4h norms per layer and no final norm."""
    h, f, layers = m.d_model, m.ffn_width, m.n_layers
    embeddings = m.vocab_size * h * (1 if m.tie_embeddings else 2)
    if m.arch == "classic":
        return layers * (4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h) + embeddings
    kv = m.kv_heads * (h // m.n_heads)
    return layers * (2 * h * h + 2 * h * kv + 3 * h * f + 2 * h) + embeddings + h


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per device, by what they hold."""

    params: int
    """Model parameters resident on the device."""
    grads: int
    """Gradients resident on the device."""
    optimizer: int
    """Optimizer states resident on the device."""
    activations: int
    """Activations of one micro-batch, plus logits."""
    overhead: int
    """Fixed framework overhead."""
    host_offload: int
    """Bytes moved to host memory by offload (not counted in total)."""

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations + self.overhead


def model_state_bytes(psi: int, precision: str, zero: ZeroSpec, devices: int) -> tuple[int, int, int, int]:
    """(params, grads, optimizer, offloaded-to-host) bytes per device by the ZeRO-paper formulas."""
    p_bytes, g_bytes, k = (4, 4, 8) if precision == "fp32" else (2, 2, 12)
    params, grads, opt = p_bytes * psi, g_bytes * psi, k * psi
    stage = _set(zero.stage, "zero.stage")
    if stage >= 1:
        opt //= devices
    if stage >= 2:
        grads //= devices
    if stage >= 3:
        params //= devices
    host = 0
    if zero.offload_optimizer:
        host, opt = host + opt, 0
    if zero.offload_params:
        host, params = host + params, 0
    return params, grads, opt, host


def activation_bytes(shape: Shape, micro_batch: int, checkpointing: bool, tensor: int = 1) -> int:
    """Activation memory of one micro-batch (Korthikanti et al., 16-bit, no sequence parallelism).

    The 5·a·s²·b term is the attention scores, softmax and its dropout mask. The 'gpt' block runs
    attention through SDPA (flash / memory-efficient kernels), which never stores them, so that term
    applies only to the 'classic' block (nn.MultiheadAttention)."""
    m = shape.model
    s, b, h, a = shape.seq_len, micro_batch, m.d_model, m.n_heads
    scores = 5 * a * s * s * b if m.arch == "classic" else 0
    # 10·sbh stays whole on every tensor rank (norm inputs, residual, dropout masks); 24·sbh is split.
    per_layer = (s * b * h * (10 * tensor + 24) + scores) // tensor
    logits = 4 * s * b * m.vocab_size
    if checkpointing:
        return m.n_layers * 2 * s * b * h + per_layer + logits
    return m.n_layers * per_layer + logits


def model_parallel(t: TrainingSpec) -> int:
    """Ranks one model replica spans (pipeline × tensor)."""
    return t.parallelism.pipeline * t.parallelism.tensor


def bubble_fraction(t: TrainingSpec) -> float:
    """Share of a pipelined step the stages sit idle: (P−1)/(m+P−1), m micro-batches per step."""
    p = t.parallelism.pipeline
    replicas = max(t.devices() // model_parallel(t), 1)
    micro = max(_set(t.global_batch_size, "globalBatchSize") // (_set(t.micro_batch_size, "microBatchSize")
                                                                 * replicas), 1)
    return (p - 1) / (micro + p - 1)


def memory_per_device(m: Shape, t: TrainingSpec, overhead: int = FRAMEWORK_OVERHEAD_BYTES) -> MemoryBreakdown:
    mp = model_parallel(t)
    params, grads, opt, host = model_state_bytes(-(-param_count(m.model) // mp), _set(t.precision, "precision"),
                                                 t.zero, max(t.devices() // mp, 1))
    acts = activation_bytes(m, _set(t.micro_batch_size, "microBatchSize"),
                            _set(t.activation_checkpointing, "activationCheckpointing"), t.parallelism.tensor)
    return MemoryBreakdown(params, grads, opt, acts, overhead, host)


def parse_quantity(q: str) -> float:
    """A Kubernetes quantity ("8Gi", "500M", "2") as a number."""
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if suffix and q.endswith(suffix):
            return float(q[: -len(suffix)]) * _UNITS[suffix]
    return float(q)


def device_memory(t: TrainingSpec) -> int:
    """Memory of one device: the GPU's, or the pod's memory for CPU training."""
    if t.gpus_per_node == 0:
        return int(parse_quantity(t.resources.memory))
    return ACCELERATORS[t.accelerator].memory_bytes


@dataclass(frozen=True)
class Estimate:
    """Preflight result."""

    params: int
    """Ψ, model parameters."""
    memory: MemoryBreakdown
    """Per-device memory by component."""
    device_memory: int
    """Memory available per device."""
    tokens: int
    """Training tokens in the budget."""
    flops: float
    """6·N·tokens."""
    hours: float
    """Wall-clock hours at the assumed MFU."""
    device_hours: float
    """hours × devices."""
    cost: float
    """USD at the budget's (or the accelerator's default) price."""
    suggestion: str
    """When it does not fit: the first change that makes it fit, or advice to add devices."""

    cpu: bool = False
    """CPU training: "host" and "device" are the same memory, so offloaded bytes still count."""
    bubble: float = 0.0
    """Share of each step a pipeline's stages idle (0 without pipeline parallelism); in ``hours``."""
    step_seconds: float = 0.0
    """Estimated wall seconds per optimizer step."""
    calibration: str = ""
    """The device class whose measured calibration timed it; "" when the fixed peak × MFU did."""

    @property
    def needed(self) -> int:
        """Bytes that must fit in one device's memory."""
        return self.memory.total + (self.memory.host_offload if self.cpu else 0)

    @property
    def fits(self) -> bool:
        return self.needed <= self.device_memory


def _tokens(m: Shape, t: TrainingSpec) -> int:
    if t.max_tokens is not None:
        return t.max_tokens
    assert t.max_steps is not None  # TrainingSpec guarantees exactly one budget
    return t.max_steps * _set(t.global_batch_size, "globalBatchSize") * m.seq_len


def _alternatives(t: TrainingSpec) -> list[tuple[str, TrainingSpec]]:
    """Cheaper-memory variants, in the order we would recommend them."""
    z = t.zero
    out = []
    if _set(z.stage, "zero.stage") < 3:
        out.append(("zero.stage: 3", replace(t, zero=replace(z, stage=3))))
    if not t.activation_checkpointing:
        out.append(("activationCheckpointing: true", replace(t, activation_checkpointing=True)))
    if _set(t.micro_batch_size, "microBatchSize") > 1:
        out.append(("microBatchSize: 1", replace(t, micro_batch_size=1)))
    out.append(("zero: {stage: 3, offloadOptimizer: true}",
                replace(t, zero=ZeroSpec(stage=3, offload_optimizer=True, offload_params=False))))
    out.append(("zero: {stage: 3, offloadOptimizer: true, offloadParams: true}, activationCheckpointing: true,"
                " microBatchSize: 1",
                replace(t, zero=ZeroSpec(stage=3, offload_optimizer=True, offload_params=True),
                        activation_checkpointing=True, micro_batch_size=1)))
    return out


def _needed(m: Shape, t: TrainingSpec) -> int:
    mem = memory_per_device(m, t)
    return mem.total + (mem.host_offload if t.gpus_per_node == 0 else 0)


def suggest(m: Shape, t: TrainingSpec, available: int) -> str:
    for text, variant in _alternatives(t):
        if _needed(m, variant) <= available:
            return f"set training.{text}"
    return "no single-setting change fits; add nodes or GPUs per node (ZeRO-3 divides model state by devices)"


def estimate(spec: TrainingRunSpec, mfu: float = DEFAULT_MFU, calibration: Calibration | None = None) -> Estimate:
    """Preflight for one spec, with the preset's values where the spec leaves them unset.

    With a `calibration` (kiln_api.estimate_calibration) time comes from the measured per-step overhead
    and FLOP/s of that device class and the fixed overhead memory from its measured process memory;
    without one, from the accelerator's peak × `mfu` and FRAMEWORK_OVERHEAD_BYTES.

    Raises SpecError when the resolved spec breaks a rule (e.g. the preset's batch on this world size).
    """
    spec = resolve_spec(spec)
    check_tree(spec, "spec")
    t = spec.training
    m = model_shape(spec.model, _set(spec.data.tokenizer.vocab_size, "data.tokenizer.vocabSize"))
    psi = param_count(m.model)
    mem = memory_per_device(m, t, FRAMEWORK_OVERHEAD_BYTES if calibration is None else calibration.base_memory_bytes)
    available = device_memory(t)
    tokens = _tokens(m, t)
    flops = 6.0 * psi * tokens
    acc = ACCELERATORS[t.accelerator]
    bubble = bubble_fraction(t)
    step_tokens = _set(t.global_batch_size, "globalBatchSize") * m.seq_len
    step_flops = 6.0 * psi * step_tokens / t.devices()
    if calibration is None:
        step_s = step_flops / (acc.peak_flops * mfu) / (1.0 - bubble)
    else:
        step_s = calibration.step_seconds(step_flops) / (1.0 - bubble)
    hours = step_s * tokens / step_tokens / 3600.0
    price = spec.budget.price_per_gpu_hour if spec.budget.price_per_gpu_hour is not None else acc.price_per_hour
    device_hours = hours * t.devices()
    fits = _needed(m, t) <= available
    return Estimate(
        params=psi, memory=mem, device_memory=available, tokens=tokens, flops=flops, hours=hours,
        device_hours=device_hours, cost=device_hours * price,
        suggestion="" if fits else suggest(m, t, available), cpu=t.gpus_per_node == 0, bubble=bubble,
        step_seconds=step_s, calibration=calibration.device_class if calibration is not None else "",
    )


def explain(e: Estimate) -> str:
    """The one-line reason used in the PreflightFailed condition and by `kiln estimate`."""
    if e.fits:
        return (f"fits: {e.needed / GiB:.1f} GiB of {e.device_memory / GiB:.1f} GiB per device; "
                f"{e.flops:.3g} FLOPs, ~{e.hours:.2f} h, ~${e.cost:.2f}")
    return (f"does not fit: needs {e.needed / GiB:.1f} GiB per device "
            f"(params {e.memory.params / GiB:.1f}, grads {e.memory.grads / GiB:.1f}, "
            f"optimizer {e.memory.optimizer / GiB:.1f}, activations {e.memory.activations / GiB:.1f}) "
            f"but a device has {e.device_memory / GiB:.1f} GiB; {e.suggestion}")


def table(e: Estimate) -> list[tuple[str, str]]:
    """Rows for `kiln estimate` (the resource table of the brief)."""
    gib = GiB
    return [
        ("parameters", f"{e.params:,}"),
        ("params / device", f"{e.memory.params / gib:.2f} GiB"),
        ("grads / device", f"{e.memory.grads / gib:.2f} GiB"),
        ("optimizer / device", f"{e.memory.optimizer / gib:.2f} GiB"),
        ("activations / device", f"{e.memory.activations / gib:.2f} GiB"),
        ("offloaded to host", f"{e.memory.host_offload / gib:.2f} GiB"),
        ("total / device", f"{e.needed / gib:.2f} GiB of {e.device_memory / gib:.2f} GiB"),
        ("fits", "yes" if e.fits else f"no: {e.suggestion}"),
        ("tokens", f"{e.tokens:,}"),
        ("FLOPs (6N·tokens)", f"{e.flops:.3g}"),
        ("pipeline bubble", f"{e.bubble:.0%} of each step"),
        ("step time", f"{e.step_seconds:.4g} s ({'calibrated on ' + e.calibration if e.calibration else 'peak x MFU'})"),
        ("time", f"{e.hours:.2f} h"),
        ("device-hours", f"{e.device_hours:.2f}"),
        ("cost", f"${e.cost:,.2f}"),
    ]
