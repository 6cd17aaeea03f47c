"""The TrainingRun resource (``kiln.dev/v1alpha1``): typed spec and status.

These dataclasses are the single source of truth: ``crd.py`` generates the CRD's structural schema
from them (descriptions come from the field docstrings, constraints from :func:`knob`), the operator
parses ``body["spec"]`` with :func:`parse_spec`, and ``kiln estimate -f run.yaml`` does the same
offline. Cross-field rules are declared once, in each type's ``RULES`` (``kiln_api.rules``): the CRD's
CEL rules and the Python checks are both generated from them. Rules over the trainer's types
(batch arithmetic, ZeRO offload, head shapes, ...) are projected onto the spec's fields here.

Fields the model preset decides (batch sizes, precision, ZeRO, optimizer, cadences, vocabulary) have
no default here: unset, they come from the preset (``kiln_api.compiler``), so a CRD default never masks
a preset's value; whatever the user writes overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from kiln_api import data_config as dc
from kiln_api import train_config as tc
from kiln_api.presets import ACCELERATORS, MODEL_PRESET_NAMES
from kiln_api.rules import F, Rule, all_of, check_tree, has, if_, implies, lit
from kiln_api.runstatus import (
    PHASES,
    TERMINAL_PHASES,
    Artifacts,
    Condition,
    EstimateStatus,
    Progress,
    Restarts,
    TrainingJobRef,
    TrainingRunStatus,
    progress_patch,
)
from kiln_api.specfields import from_dict, knob, to_dict

GROUP = "kiln.dev"
VERSION = "v1alpha1"
KIND = "TrainingRun"
PLURAL = "trainingruns"
SHORT_NAME = "tr"


PRECISIONS = ("fp32", "bf16", "fp16")

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"

# Full patterns, not prefixes: these strings reach pod specs, env and shell-free argv, and a newline,
# a blank or a `..` segment in them fails far from the field (or escapes the run's storage prefix).
# Go's RE2 (the API server) and Python's re read them alike: no lookarounds, no backreferences.
_SEGMENT = r"\.*[A-Za-z0-9_~=+-][A-Za-z0-9._~=+-]*"  # a path segment that is not '.' or '..'
_GLOB_SEGMENT = r"\.*[A-Za-z0-9_~=+*?,{}\[\]-][A-Za-z0-9._~=+*?,{}\[\]-]*"  # the same, globs allowed
_BUCKET = r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]"
_HOST = r"([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])"
_STORAGE_URI = rf"^s3://{_BUCKET}(/{_SEGMENT})*/?$"
_SOURCE_URI = rf"^(s3://{_BUCKET}|file://|builtin://{_SEGMENT})(/{_GLOB_SEGMENT})*/?$"
_ENDPOINT = rf"^https?://{_HOST}(:[0-9]{{1,5}})?(/{_SEGMENT})*/?$"
_IMAGE_COMPONENT = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
_IMAGE = (rf"^({_HOST}(:[0-9]{{1,5}})?/)?{_IMAGE_COMPONENT}(/{_IMAGE_COMPONENT})*"
          r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")
_REGION = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


@dataclass
class SecretRef:
    """A Secret in the TrainingRun's own namespace (no namespace field on purpose)."""

    name: str = knob(pattern=_DNS_LABEL, max_length=253)
    """Name of a Secret in the run's namespace holding keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."""


@dataclass
class StorageSpec:
    """Where the run keeps datasets, checkpoints, metrics and exported models."""

    uri: str = knob(pattern=_STORAGE_URI, max_length=1024, immutable=True)
    """Root URI, s3://bucket/prefix; layout below it is fixed by kiln_api.s3layout."""
    endpoint: str | None = knob(None, pattern=_ENDPOINT, max_length=512)
    """S3 endpoint for non-AWS stores (MinIO, Ceph); passed to pods as AWS_ENDPOINT_URL."""
    secret_ref: SecretRef | None = None
    """Credentials by Secret reference; the Secret must live in the run's namespace."""
    service_account_name: str | None = knob(None, pattern=_DNS_LABEL, max_length=253)
    """Workload identity instead of a Secret: pods run as this ServiceAccount (IRSA, GKE WI)."""
    region: str = knob("us-east-1", pattern=_REGION, max_length=64)
    """Bucket region, passed as AWS_DEFAULT_REGION."""


@dataclass
class DataSource:
    """One input corpus (mapped to kiln_api.data_config.SourceSpec)."""

    uri: str = knob(pattern=_SOURCE_URI, max_length=1024)
    """Files to read: s3://bucket/prefix/*.jsonl, file:///abs/*.txt or builtin://tinycorpus/*; globs allowed."""
    format: str = knob("jsonl", enum=("txt", "jsonl", "parquet"))
    """File format; .gz and .zst are decompressed by suffix."""
    text_field: str = knob("text", max_length=128)
    """Key or column holding the document text (jsonl, parquet)."""
    weight: float = knob(1.0, minimum=0.0, exclusive_minimum=True, maximum=100.0)
    """Sampling weight: 0.5 keeps about half the documents, 2 repeats each twice."""

    RULES: ClassVar[tuple[Rule, ...]] = tuple(r.onto({}) for r in dc.SourceSpec.RULES)


@dataclass
class CleaningSpec:
    """Document filters applied before tokenization."""

    min_units: int = knob(5, minimum=0)
    """Drop documents shorter than this many units (words; each CJK character counts one)."""
    max_units: int = knob(200_000, minimum=1)
    """Drop documents longer than this many units."""
    dedup: bool = True
    """Remove near-duplicate documents (MinHash); exact duplicates are always removed."""

    RULES: ClassVar[tuple[Rule, ...]] = tuple(r.onto({}) for r in dc.FilterSpec.RULES)


@dataclass
class TokenizerSpec:
    """The SentencePiece BPE tokenizer trained on the cleaned corpus."""

    vocab_size: int | None = knob(None, minimum=300, maximum=262144)
    """Vocabulary size; the model's embedding rows follow it. Default: the model preset's."""
    input_sentence_size: int = knob(2_000_000, minimum=100)
    """At most this many lines (a seeded sample) train the tokenizer."""


@dataclass
class DataSpec:
    """What to train on and how to prepare it."""

    sources: list[DataSource] = knob(max_items=64, min_items=1)
    """Input corpora; at least one (required: a default [] would break its own minItems)."""
    cleaning: CleaningSpec = field(default_factory=CleaningSpec)
    """Filters applied before tokenization."""
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    """Tokenizer training settings."""
    validation_fraction: float = knob(0.01, minimum=0.0, maximum=0.5)
    """Share of documents held out for validation loss."""
    shards: int = knob(1, minimum=1, maximum=100000)
    """Train shard files to write."""


@dataclass
class CustomModel:
    """An explicit transformer shape (model.preset: custom)."""

    layers: int = knob(minimum=1, maximum=256)
    """Transformer blocks."""
    hidden: int = knob(minimum=8, maximum=65536)
    """Model width."""
    heads: int = knob(minimum=1, maximum=512)
    """Attention heads; hidden must be divisible by heads."""
    kv_heads: int | None = knob(None, minimum=1)
    """Key/value heads (grouped-query attention); default heads."""
    ffn_hidden: int | None = knob(None, minimum=8)
    """SwiGLU inner width; default 8/3·hidden rounded up to 64."""
    seq_len: int = knob(2048, minimum=16, maximum=131072)
    """Training context length in tokens."""

    # The trainer's shape rules, on this type's names (a custom shape is always arch gpt).
    RULES: ClassVar[tuple[Rule, ...]] = tuple(
        r.onto({"d_model": F.hidden, "n_heads": F.heads, "n_kv_heads": F.kv_heads, "arch": lit("gpt")})
        for r in tc.ModelConfig.RULES
    )


@dataclass
class InitFrom:
    """Start from another run's weights instead of random initialization."""

    run: str = knob(pattern=_DNS_LABEL, max_length=253)
    """Name of a TrainingRun in the same namespace and storage root."""
    step: int | None = knob(None, minimum=0)
    """Checkpoint step to load; default its newest committed checkpoint."""


@dataclass
class ModelSpec:
    """The network to train."""

    preset: str = knob("tiny_cpu", enum=(*MODEL_PRESET_NAMES, "custom"))
    """Named shape from kiln_api.train_presets, or custom."""
    custom: CustomModel | None = None
    """The shape when preset is custom."""
    objective: str = knob("causal", enum=("causal", "masked", "distillation"))
    """causal (next-token), masked LM, or distillation (causal + a teacher; needs training.distillation)."""
    init_from: InitFrom | None = None
    """Warm start from another run."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule((F.preset == "custom") == has(F.custom), "custom", "must be set exactly when {preset} is custom"),
    )


@dataclass
class ResourcesSpec:
    """Per-node (per-pod) resources besides GPUs."""

    cpu: str = knob("2", pattern=_QUANTITY)
    """CPU request and limit per pod."""
    memory: str = knob("8Gi", pattern=_QUANTITY)
    """Memory request and limit per pod; also the host memory the preflight assumes for offload."""


@dataclass
class ZeroSpec:
    """DeepSpeed ZeRO partitioning and offload."""

    stage: int | None = knob(None, minimum=0, maximum=3)
    """ZeRO stage: 0 none, 1 optimizer states, 2 + gradients, 3 + parameters. Default: the preset's."""
    offload_optimizer: bool | None = None
    """Keep optimizer states in host memory (ZeRO-Offload); stage >= 1. Default: the preset's."""
    offload_params: bool | None = None
    """Keep parameters in host memory (ZeRO-Infinity); stage 3 only. Default: the preset's."""

    RULES: ClassVar[tuple[Rule, ...]] = tuple(r.onto({}) for r in tc.ZeroConfig.RULES)


@dataclass
class OptimizerSpec:
    """AdamW with a warmup + cosine learning-rate schedule."""

    name: str = knob("adamw", enum=("adamw",))
    """Optimizer."""
    lr: float | None = knob(None, maximum=1.0)
    """Peak learning rate (> 0). Default: the preset's."""
    min_lr_ratio: float | None = knob(None, minimum=0.0, maximum=1.0)
    """Cosine floor as a fraction of lr. Default: the preset's."""
    warmup_steps: int | None = knob(None, minimum=0)
    """Linear warmup steps (fewer than maxSteps). Default: the preset's."""
    weight_decay: float | None = knob(None, minimum=0.0)
    """Decoupled weight decay. Default: the preset's."""
    beta1: float | None = knob(None, maximum=1.0)
    """Adam beta1, in [0, 1). Default: the preset's."""
    beta2: float | None = knob(None, maximum=1.0)
    """Adam beta2, in [0, 1). Default: the preset's."""
    grad_clip: float | None = knob(None, minimum=0.0)
    """Clip the global gradient norm to this value; 0 disables. Default: the preset's."""

    RULES: ClassVar[tuple[Rule, ...]] = tuple(r.onto({}) for r in tc.OptimConfig.RULES)


@dataclass
class EarlyStopping:
    """Stop when validation loss stops improving."""

    patience: int = knob(5, minimum=1)
    """Evaluations without improvement before stopping."""
    min_delta: float = knob(0.0, minimum=0.0)
    """Smallest decrease that counts as improvement."""


@dataclass
class Distillation:
    """Learn from a teacher run's logits."""

    teacher_run: str = knob(pattern=_DNS_LABEL, max_length=253)
    """TrainingRun (same namespace and storage) whose newest checkpoint is the teacher."""
    alpha: float = knob(0.5, minimum=0.0, maximum=1.0)
    """Weight of the distillation loss against the plain LM loss."""
    temperature: float = knob(2.0, minimum=0.0, exclusive_minimum=True, maximum=100.0)
    """Softmax temperature for both models."""


@dataclass
class CheckpointSpec:
    """When to checkpoint and how many to keep."""

    interval_steps: int | None = knob(None, minimum=1)
    """Save a checkpoint every this many steps (and at the end and on SIGTERM). Default: the preset's."""
    keep: int | None = knob(None, minimum=2, maximum=100)
    """Committed checkpoints kept; at least 2 so a corrupt newest one never strands the run. Default: the preset's."""


@dataclass
class ParallelismSpec:
    """Model parallelism; the ranks left over are data parallel (ranks = data × pipeline × tensor)."""

    pipeline: int = knob(1, minimum=1, maximum=64)
    """Pipeline stages: the layers are split across this many ranks by parameter count (DeepSpeed's pipeline
    engine; micro-batches flow through the stages; ZeRO stage at most 1)."""
    tensor: int = knob(1, minimum=1, maximum=64)
    """Tensor-parallel ranks: each block's attention heads and MLP width are split across them; heads and
    kvHeads must be divisible by it."""

    RULES: ClassVar[tuple[Rule, ...]] = tuple(r.onto({}) for r in tc.ParallelConfig.RULES)


# Ranks of the gang: pods × processes per pod (one per GPU, or 1 on CPU, unless processesPerNode says).
_WORLD = F.nodes * if_(has(F.processes_per_node), F.processes_per_node, if_(F.gpus_per_node > 0, F.gpus_per_node, 1))
_MODEL_PARALLEL = F.parallelism.pipeline * F.parallelism.tensor


@dataclass
class TrainingSpec:
    """How to train: scale, budget, precision, optimizer, checkpoints, restarts.

    Edits after creation: the world (nodes, gpusPerNode, processesPerNode, accelerator), the batch,
    precision, ZeRO and seed are immutable (a checkpoint only resumes under the same values); every
    other field is applied: the operator recompiles the configs and restarts the gang from the last
    committed checkpoint (event SpecChanged).
    """

    nodes: int = knob(1, minimum=1, maximum=1024, immutable=True)
    """Pods in the gang (PyTorchJob Master + Workers, or Indexed Job completions)."""
    gpus_per_node: int = knob(0, minimum=0, maximum=16, immutable=True)
    """GPUs per pod (nvidia.com/gpu); 0 trains on CPU."""
    processes_per_node: int | None = knob(None, minimum=1, maximum=64, immutable=True)
    """Trainer processes (ranks) per pod, started by torchrun inside the pod; default one per GPU, or 1 on CPU. On CPU
    several processes share the pod's cores (gloo); with GPUs it must equal gpusPerNode."""
    accelerator: str = knob("cpu", enum=tuple(ACCELERATORS), immutable=True)
    """Accelerator kind, for the memory preflight and cost estimate."""
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    """CPU and memory per pod."""
    max_steps: int | None = knob(None, minimum=1)
    """Stop after this many optimizer steps (exactly one of maxSteps, maxTokens)."""
    max_tokens: int | None = knob(None, minimum=1)
    """Stop after this many training tokens (exactly one of maxSteps, maxTokens)."""
    micro_batch_size: int | None = knob(None, minimum=1, maximum=4096, immutable=True)
    """Sequences per device per forward pass. Default: the preset's."""
    global_batch_size: int | None = knob(None, minimum=1, immutable=True)
    """Sequences per optimizer step; a multiple of microBatchSize × devices. Default: the preset's."""
    precision: str | None = knob(None, enum=PRECISIONS, immutable=True)
    """Training precision (fp16 uses dynamic loss scaling; bf16 needs zero.stage >= 1). Default: the preset's."""
    zero: ZeroSpec = knob(factory=ZeroSpec, immutable=True)
    """DeepSpeed ZeRO settings."""
    activation_checkpointing: bool | None = None
    """Recompute activations in the backward pass to save memory. Default: the preset's."""
    parallelism: ParallelismSpec = knob(factory=ParallelismSpec, immutable=True)
    """Pipeline and tensor parallelism; default none (data parallel over every rank)."""
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    """Optimizer and schedule."""
    early_stopping: EarlyStopping | None = None
    """Early stopping on validation loss. Default: the preset's (off for tiny_cpu)."""
    distillation: Distillation | None = None
    """Teacher for model.objective: distillation."""
    eval_interval_steps: int | None = knob(None, minimum=1)
    """Validation loss every this many steps. Default: the preset's."""
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)
    """Checkpoint cadence and retention."""
    spot: bool = False
    """Schedule on spot/preemptible nodes (toleration kiln.dev/spot); preemptions are expected."""
    max_restarts: int = knob(3, minimum=0, maximum=100)
    """Whole-gang restarts after failures; preemptions do not count."""
    max_preemptions: int = knob(20, minimum=0, maximum=1000)
    """Whole-gang restarts after preemptions."""
    seed: int = knob(1234, minimum=0, immutable=True)
    """Random seed for initialization and data order."""

    def procs_per_node(self) -> int:
        """Ranks per pod: processesPerNode, else one per GPU, else 1."""
        return self.processes_per_node or max(self.gpus_per_node, 1)

    def devices(self) -> int:
        """All ranks: pods × ranks per pod (= data parallel × pipeline × tensor)."""
        return self.nodes * self.procs_per_node()

    RULES: ClassVar[tuple[Rule, ...]] = (
        *(r.onto({}) for r in tc.ScheduleConfig.RULES),
        tc.WORLD_RULE.onto({"world_size": _WORLD, "pipeline": F.parallelism.pipeline, "tensor": F.parallelism.tensor},
                           field=F.parallelism),
        # The batch divides over the data-parallel replicas only (pipeline and tensor ranks share a batch);
        # a world that does not split is the world rule's error, so the batch rule then counts one replica.
        tc.BATCH_RULE.onto({"world_size": if_(_WORLD % _MODEL_PARALLEL == 0, _WORLD // _MODEL_PARALLEL, 1)}),
        tc.PARALLEL_NO_DISTILL.onto({"distill.teacher": F.distillation, "parallel": F.parallelism}),
        tc.BF16_NEEDS_ZERO.onto({"precision.bf16": F.precision == "bf16"}, field=F.precision),
        Rule((F.gpus_per_node == 0) == (F.accelerator == "cpu"), "accelerator",
             "{accelerator} must be cpu exactly when {gpus_per_node} is 0"),
        # Warmup as long as the run would never reach the peak learning rate the spec asks for.
        Rule(implies(has(F.max_steps), F.optimizer.warmup_steps < F.max_steps), "optimizer.warmup_steps",
             "{optimizer.warmup_steps} must be fewer than {max_steps}"),
        Rule(implies(all_of(F.gpus_per_node > 0, has(F.processes_per_node)), F.processes_per_node == F.gpus_per_node),
             "processes_per_node", "{processes_per_node} must equal {gpus_per_node} (one rank per GPU)"),
    )


@dataclass
class ServingSpec:
    """Roll the exported model out to a Triton target (issue 7)."""

    target: str = knob(pattern=_DNS_LABEL, max_length=63)
    """Name of the serving target (Triton Deployment + Service) in the run's namespace."""
    replicas: int = knob(1, minimum=1, maximum=64)
    """Triton replicas."""
    quantization: str = knob("none", enum=("none", "int8"))
    """Serve the INT8 weight-only variant."""
    gate_prompts: list[str] = knob(factory=list, max_items=32)
    """Prompts the new version must answer (greedy output equal to the export's reference)."""
    max_latency_ms: int = knob(5000, minimum=1)
    """Gate: latency bound per prompt."""


@dataclass
class BudgetSpec:
    """Cost guard rails."""

    max_gpu_hours: float | None = knob(None, minimum=0.0)
    """Fail the run (reason BudgetExceeded) once it has used this many device-hours."""
    price_per_gpu_hour: float | None = knob(None, minimum=0.0)
    """Price for cost estimates; default from the accelerator table."""


@dataclass
class TrainingRunSpec:
    """Desired state of a TrainingRun."""

    storage: StorageSpec
    """Object storage for everything the run produces."""
    training: TrainingSpec
    """Scale, budget and hyper-parameters (a step or token budget is required)."""
    data: DataSpec = knob(immutable=True)
    """Data sources and preparation; immutable once set."""
    image: str = knob("ghcr.io/kiln-dev/kiln-trainer:0.1.0", pattern=_IMAGE, max_length=512)
    """Trainer image; runs kiln-trainer prepare|train|export."""
    model: ModelSpec = knob(factory=ModelSpec, immutable=True)
    """Network to train; immutable once set."""
    launcher: str = knob("Auto", enum=("Auto", "PyTorchJob", "IndexedJob"), immutable=True)
    """Auto uses a PyTorchJob when the Kubeflow CRD exists, else an Indexed Job + headless Service."""
    serving: ServingSpec | None = None
    """Roll out to Triton after export; without it the run ends after Exporting."""
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    """Cost limits and price."""
    suspend: bool = False
    """Stop the training pods (they checkpoint on SIGTERM) and resume later from the newest checkpoint."""
    queue: str | None = knob(None, pattern=_DNS_LABEL, max_length=63, immutable=True)
    """Kueue LocalQueue in the run's namespace: the training job is created suspended with the label
    kueue.x-k8s.io/queue-name and starts when Kueue admits it (status condition Queued meanwhile)."""
    queue_priority: str | None = knob(None, pattern=_DNS_LABEL, max_length=253, immutable=True)
    """Kueue WorkloadPriorityClass of the training job (label kueue.x-k8s.io/priority-class); a higher one
    may preempt a lower one, which resumes from its newest committed checkpoint when readmitted."""

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(implies(F.model.objective == "distillation", has(F.training.distillation)), "training.distillation",
             "is required when {model.objective} is distillation"),
        # A custom shape is checked at admission; a preset's shape when the compiler builds train.yaml.
        *(r.onto({"model.n_layers": F.model.custom.layers, "model.n_heads": F.model.custom.heads,
                  "model.n_kv_heads": F.model.custom.kv_heads, "parallel": F.training.parallelism})
          for r in tc.PARALLEL_MODEL_RULES),
    )


def parse_spec(raw: Any) -> TrainingRunSpec:
    """Parse and validate ``body["spec"]`` (types, bounds, then every rule); raises SpecError naming the field.

    Rules over fields left to the preset are skipped here; ``kiln_api.compiler`` checks them again
    once the preset has filled them in.
    """
    spec = from_dict(TrainingRunSpec, raw, "spec")
    check_tree(spec, "spec")
    return spec


def spec_dict(spec: TrainingRunSpec) -> dict[str, Any]:
    """The camelCase form of a spec, with every default filled in."""
    out = to_dict(spec)
    assert isinstance(out, dict)
    return out


__all__ = [  # the status types live in kiln_api.runstatus; importers of this module keep working
    "PHASES", "TERMINAL_PHASES", "Artifacts", "Condition", "EstimateStatus", "Progress", "Restarts",
    "TrainingJobRef", "TrainingRunStatus", "progress_patch",
]
