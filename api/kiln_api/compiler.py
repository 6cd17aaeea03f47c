"""The one compiler from a TrainingRun spec to the configs its pods read.

``compile_run(spec, identity)`` is pure: the same spec and identity give the same configs, and the
operator's ConfigMap holds exactly ``CompiledRun.files()``. The model preset is the base; a spec field
the user wrote overrides it, a field left unset takes the preset's value. :data:`PRESET_FIELDS` is
the single table of which spec field sets which trainer field, read in both directions:
preset → unset spec field (:func:`resolve_spec`) and spec → trainer config (:func:`compile_run`).

A field reaches DeepSpeed in three hops and keeps its name on the way, e.g.
``spec.training.microBatchSize`` → ``TrainConfig.batch.micro_batch_size`` →
``train_micro_batch_size_per_gpu`` (``kiln_trainer.train.ds_config``).

Rules the CRD cannot decide (a field left to the preset, the world size) are checked here with the
same declarations the CRD's CEL comes from, on the resolved spec, so errors name spec fields.

Where the compiler adapts a preset's value to the run instead of taking it as is (a warmup longer than
the run allows), it says so in :attr:`CompiledRun.notes`; the operator emits each as an event on the run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

from kiln_api import contract
from kiln_api.data_config import PrepareConfig
from kiln_api.export_config import ExportConfig
from kiln_api.rules import check_tree
from kiln_api.s3layout import RunLayout
from kiln_api.specfields import SpecError, camel
from kiln_api.train_config import TrainConfig
from kiln_api.train_presets import PRESETS, custom_base
from kiln_api.trainingrun import EarlyStopping, TrainingRunSpec

PRESET_FIELDS: tuple[tuple[str, str], ...] = (
    # (spec field below TrainingRunSpec, TrainConfig field); snake_case paths.
    ("training.micro_batch_size", "batch.micro_batch_size"),
    ("training.global_batch_size", "batch.global_batch_size"),
    ("training.zero.stage", "zero.stage"),
    ("training.zero.offload_optimizer", "zero.offload_optimizer"),
    ("training.zero.offload_params", "zero.offload_params"),
    ("training.activation_checkpointing", "model.activation_checkpointing"),
    ("training.optimizer.lr", "optim.lr"),
    ("training.optimizer.weight_decay", "optim.weight_decay"),
    ("training.optimizer.beta1", "optim.beta1"),
    ("training.optimizer.beta2", "optim.beta2"),
    ("training.optimizer.grad_clip", "optim.grad_clip"),
    ("training.optimizer.min_lr_ratio", "schedule.min_lr_ratio"),
    ("training.optimizer.warmup_steps", "schedule.warmup_steps"),
    ("training.eval_interval_steps", "early_stop.eval_every_steps"),
    ("training.checkpoint.interval_steps", "checkpoint.every_steps"),
    ("training.checkpoint.keep", "checkpoint.keep_last"),
    ("data.tokenizer.vocab_size", "model.vocab_size"),
)
"""Spec fields without a CRD default: the preset's value unless the user wrote one."""

SPEC_ONLY_FIELDS: tuple[tuple[str, str], ...] = (
    # Always written by the user (or defaulted by the CRD itself, not by a preset).
    ("training.max_steps", "schedule.max_steps"),
    ("training.max_tokens", "schedule.max_tokens"),
    ("training.seed", "seed"),
    ("training.seed", "data.seed"),
    ("training.parallelism.pipeline", "parallel.pipeline"),
    ("training.parallelism.tensor", "parallel.tensor"),
)

_CUSTOM_SHAPE: tuple[tuple[str, str], ...] = (
    ("model.custom.hidden", "model.d_model"),
    ("model.custom.layers", "model.n_layers"),
    ("model.custom.heads", "model.n_heads"),
    ("model.custom.kv_heads", "model.n_kv_heads"),
    ("model.custom.ffn_hidden", "model.ffn_hidden"),
    ("model.custom.seq_len", "model.max_seq_len"),
    ("model.custom.seq_len", "batch.seq_len"),
)

WARMUP_MAX_SHARE = 0.2
"""A preset's warmup takes at most this share of the run's steps (the presets' 5000 needs 25,000 steps):
a run that spends most of its budget below the peak learning rate learns little. A warmup the user
wrote is the user's choice and only has to be shorter than the run (a declared rule)."""

_PRECISION_FLAGS = {"fp32": (False, False), "bf16": (True, False), "fp16": (False, True)}


@dataclass(frozen=True)
class RunIdentity:
    """Who the run is: what the compiler needs besides the spec."""

    name: str
    """metadata.name."""
    namespace: str
    """metadata.namespace."""


@dataclass(frozen=True)
class ServingConfig:
    """What the rollout reads: the Triton target and the gate for a new version."""

    target: str
    """Triton Deployment + Service name (also the Triton model name)."""
    model_repository: str
    """S3 root of the Triton model repository the export writes into."""
    model_name: str
    """The Triton model whose versions the target serves (the export's model_name)."""
    quantization: str
    """``none`` or ``int8``: the variant the rollout expects the new version to hold."""
    replicas: int
    """Triton replicas."""
    gate_prompts: tuple[str, ...]
    """Prompts a new version must answer as the export's reference does."""
    max_latency_ms: int
    """Latency bound per gate prompt."""


@dataclass(frozen=True)
class CompiledRun:
    """Everything the pods of one run read, derived from the spec by :func:`compile_run` only."""

    spec: TrainingRunSpec
    """The spec with every preset-decided field filled in (what the run really does)."""
    prepare: PrepareConfig
    """prepare.yaml."""
    train: TrainConfig
    """train.yaml (complete: the trainer adds nothing)."""
    export: ExportConfig
    """export.yaml."""
    serving: ServingConfig | None
    """The rollout's settings; None when the run ends after Exporting."""
    dataset_uri: str
    """Where prepare writes the dataset (content-addressed by the data spec)."""
    world_size: int
    """Training ranks (pods × ranks per pod)."""
    raw: dict[str, dict[str, Any]]
    """The files' contents as plain data, by file name."""
    notes: tuple[str, ...] = ()
    """Where the compiler adapted a preset's value to this run, and why (the operator emits them as events)."""

    def files(self) -> dict[str, str]:
        """ConfigMap data: prepare.yaml, train.yaml and export.yaml."""
        return {name: yaml.safe_dump(body, sort_keys=True) for name, body in self.raw.items()}


def _get(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def _set(obj: Any, path: str, value: Any) -> None:
    *head, last = path.split(".")
    setattr(_get(obj, ".".join(head)) if head else obj, last, value)


def base_config(spec: TrainingRunSpec) -> TrainConfig:
    """The preset the spec names, or for a custom shape the base its hardware suggests."""
    if spec.model.custom is None:
        return PRESETS[spec.model.preset]()
    c = spec.model.custom
    return custom_base(spec.training.gpus_per_node > 0, layers=c.layers, hidden=c.hidden, heads=c.heads,
                       kv_heads=c.kv_heads, ffn_hidden=c.ffn_hidden, seq_len=c.seq_len)


def resolve_spec(spec: TrainingRunSpec, base: TrainConfig | None = None) -> TrainingRunSpec:
    """A copy of ``spec`` with each field left to the preset filled from it; rules are not checked here."""
    return _resolve(spec, base)[0]


def _resolve(spec: TrainingRunSpec, base: TrainConfig | None = None) -> tuple[TrainingRunSpec, list[str]]:
    """:func:`resolve_spec` plus the notes on preset values adapted to the run."""
    base = base_config(spec) if base is None else base
    out = copy.deepcopy(spec)
    for spec_path, cfg_path in PRESET_FIELDS:
        if _get(out, spec_path) is None:
            _set(out, spec_path, _get(base, cfg_path))
    notes = _fit_warmup(spec, out, base)
    t = out.training
    if t.precision is None:
        t.precision = next(k for k, v in _PRECISION_FLAGS.items() if v == (base.precision.bf16, base.precision.fp16))
    if t.early_stopping is None and base.early_stop.patience > 0:
        t.early_stopping = EarlyStopping(patience=base.early_stop.patience, min_delta=base.early_stop.min_delta)
    return out, notes


def _step_budget(resolved: TrainingRunSpec, base: TrainConfig) -> tuple[int, str] | None:
    """The run's optimizer steps and where that number comes from; None while the budget is unset."""
    t = resolved.training
    if t.max_steps is not None:
        return t.max_steps, f"maxSteps={t.max_steps}"
    if t.max_tokens is None or t.global_batch_size is None:
        return None  # the declared rules name the missing field
    per_step = t.global_batch_size * base.batch.seq_len
    return -(-t.max_tokens // per_step), f"maxTokens={t.max_tokens} / ({t.global_batch_size} × {base.batch.seq_len})"


def _fit_warmup(spec: TrainingRunSpec, resolved: TrainingRunSpec, base: TrainConfig) -> list[str]:
    """Shorten a preset's warmup to WARMUP_MAX_SHARE of the run's steps; returns the note saying so."""
    optimizer = resolved.training.optimizer
    budget = _step_budget(resolved, base)
    if spec.training.optimizer.warmup_steps is not None or budget is None or optimizer.warmup_steps is None:
        return []
    steps, source = budget
    cap = int(steps * WARMUP_MAX_SHARE)
    if optimizer.warmup_steps <= cap:
        return []
    note = (f"spec.training.optimizer.warmupSteps: {cap} instead of the preset's {optimizer.warmup_steps}, "
            f"because the run has {steps} steps ({source}) and a preset's warmup takes at most "
            f"{WARMUP_MAX_SHARE:.0%} of them; write warmupSteps to choose another")
    optimizer.warmup_steps = cap
    return [note]


def _train_raw(spec: TrainingRunSpec, base: TrainConfig, layout: RunLayout, dataset_uri: str,
               who: RunIdentity) -> dict[str, Any]:
    """The base preset as a dict with every spec-decided field written over it."""
    cfg = copy.deepcopy(base)
    for spec_path, cfg_path in PRESET_FIELDS + SPEC_ONLY_FIELDS:
        _set(cfg, cfg_path, _get(spec, spec_path))
    t = spec.training
    assert t.precision is not None  # resolve_spec filled it
    cfg.precision.bf16, cfg.precision.fp16 = _PRECISION_FLAGS[t.precision]
    if t.early_stopping is not None:
        cfg.early_stop.patience, cfg.early_stop.min_delta = t.early_stopping.patience, t.early_stopping.min_delta
    cfg.model.objective = "masked" if spec.model.objective == "masked" else "causal"
    raw = cfg.to_dict()
    raw.update(run=who.name, storage_uri=str(layout.root))
    raw["data"]["path"] = dataset_uri
    # Pods have a read-only root: local checkpoints go below the pod's one writable emptyDir.
    raw["checkpoint"]["local_dir"] = contract.CHECKPOINT_DIR
    raw["monitor"]["prometheus_port"] = contract.METRICS_PORT
    if t.distillation is not None:
        teacher = RunLayout.of(spec.storage.uri, who.namespace, t.distillation.teacher_run).checkpoints()
        raw["distill"].update(teacher=teacher, alpha=t.distillation.alpha, temperature=t.distillation.temperature)
    if spec.model.init_from is not None:
        src = RunLayout.of(spec.storage.uri, who.namespace, spec.model.init_from.run)
        step = spec.model.init_from.step
        raw["checkpoint"]["init_from"] = src.checkpoint(step) if step is not None else src.checkpoints()
    return raw


def _prepare_raw(spec: TrainingRunSpec, layout: RunLayout) -> dict[str, Any]:
    d = spec.data
    data = {
        "sources": [{"uri": s.uri, "format": s.format, "text_field": s.text_field, "weight": s.weight}
                    for s in d.sources],
        "filters": {"min_units": d.cleaning.min_units, "max_units": d.cleaning.max_units},
        "dedup": {"near": d.cleaning.dedup},
        "tokenizer": {"vocab_size": d.tokenizer.vocab_size, "input_sentence_size": d.tokenizer.input_sentence_size},
        "packing": {"val_fraction": d.validation_fraction, "num_shards": d.shards},
    }
    return {"output": str(layout.root), "data": data}


def _export_raw(spec: TrainingRunSpec, layout: RunLayout, who: RunIdentity) -> dict[str, Any]:
    serving = spec.serving
    raw: dict[str, Any] = {
        "checkpoints_uri": layout.checkpoints(),
        "model_repository": layout.model_repository(),
        # One model per serving target, so successive runs add versions to it.
        "model_name": serving.target if serving is not None else who.name,
        "int8": serving is not None and serving.quantization == "int8",
        "run": who.name,
    }
    if serving is not None and serving.gate_prompts:
        raw["reference_prompts"] = list(serving.gate_prompts)
    return raw


def _serving(spec: TrainingRunSpec, layout: RunLayout) -> ServingConfig | None:
    s = spec.serving
    if s is None:
        return None
    return ServingConfig(target=s.target, model_repository=layout.model_repository(), model_name=s.target,
                         quantization=s.quantization, replicas=s.replicas, gate_prompts=tuple(s.gate_prompts),
                         max_latency_ms=s.max_latency_ms)


def _spec_path(cfg_path: str) -> str:
    """The spec field a trainer config field comes from (for errors), or the config path itself."""
    for spec_path, path in PRESET_FIELDS + SPEC_ONLY_FIELDS + _CUSTOM_SHAPE:
        if path == cfg_path:
            return "spec." + ".".join(camel(p) for p in spec_path.split("."))
    return f"spec (compiled train.yaml {cfg_path})"


def compile_run(spec: TrainingRunSpec, identity: RunIdentity) -> CompiledRun:
    """The configs of every step of the run; raises SpecError naming the spec field at fault."""
    try:
        base = base_config(spec)
    except SpecError as e:
        raise SpecError(_spec_path(e.path), e.problem) from e
    resolved, notes = _resolve(spec, base)
    check_tree(resolved, "spec")  # the declared rules again, now that the preset's values are in
    layout = RunLayout.of(spec.storage.uri, identity.namespace, identity.name)
    prepare_raw = _prepare_raw(resolved, layout)
    prepare = PrepareConfig.from_dict(prepare_raw)
    dataset_uri = layout.dataset(prepare.data.spec_hash())
    train_raw = _train_raw(resolved, base, layout, dataset_uri, identity)
    try:
        train = TrainConfig.from_dict(train_raw)
    except SpecError as e:
        raise SpecError(_spec_path(e.path), e.problem) from e
    export_raw = _export_raw(resolved, layout, identity)
    return CompiledRun(
        spec=resolved, prepare=prepare, train=train, export=ExportConfig.from_dict(export_raw),
        serving=_serving(resolved, layout), dataset_uri=dataset_uri, world_size=resolved.training.devices(),
        raw={"prepare.yaml": prepare_raw, "train.yaml": train_raw, "export.yaml": export_raw}, notes=tuple(notes),
    )


