"""The per-run ConfigMap ``<run>-config``: prepare.yaml, train.yaml and export.yaml.

Each file holds what the TrainingRun decides for the step's typed config
(``kiln_api.data_config.PrepareConfig``, ``kiln_api.train_config.TrainConfig`` with its preset,
``kiln_api.export_config.ExportConfig``); the trainer fills in its own defaults when it loads them.
The operator builds those types from the same dicts first, so a spec the trainer would refuse fails
here with the field named instead of in a crash-looping pod.
"""

from __future__ import annotations

from typing import Any

import yaml
from kiln_api.data_config import PrepareConfig
from kiln_api.export_config import ExportConfig
from kiln_api.s3layout import RunLayout
from kiln_api.train_config import TrainConfig
from kiln_api.train_presets import apply_preset
from kiln_api.trainingrun import TrainingRunSpec

from kiln_operator.builders.common import Run, child_name, metadata
from kiln_operator.builders.training_env import METRICS_PORT

STAGE = "config"


def prepare_raw(run: Run) -> dict[str, Any]:
    d = run.spec.data
    data = {
        "sources": [
            {"uri": s.uri, "format": s.format, "text_field": s.text_field, "weight": s.weight} for s in d.sources
        ],
        "filters": {"min_units": d.cleaning.min_units, "max_units": d.cleaning.max_units},
        "dedup": {"near": d.cleaning.dedup},
        "tokenizer": {"vocab_size": d.tokenizer.vocab_size, "input_sentence_size": d.tokenizer.input_sentence_size},
        "packing": {"val_fraction": d.validation_fraction, "num_shards": d.shards},
    }
    return {"output": run_root(run), "data": data}


def run_root(run: Run) -> str:
    """The namespace's root below spec.storage.uri (see kiln_api.s3layout)."""
    return str(RunLayout.of(run.spec.storage.uri, run.namespace, run.name).root)


def prepare_config(run: Run) -> PrepareConfig:
    return PrepareConfig.from_dict(prepare_raw(run))


def dataset_uri(run: Run) -> str:
    """Where the prepared dataset lands: content-addressed by the data spec's hash."""
    layout = RunLayout.of(run.spec.storage.uri, run.namespace, run.name)
    return layout.dataset(prepare_config(run).data.spec_hash())


def _layout(spec: TrainingRunSpec, namespace: str, run_name: str) -> RunLayout:
    return RunLayout.of(spec.storage.uri, namespace, run_name)


def _model_overrides(spec: TrainingRunSpec) -> dict[str, Any]:
    m, t = spec.model, spec.training
    model: dict[str, Any] = {
        "vocab_size": spec.data.tokenizer.vocab_size,
        "objective": "masked" if m.objective == "masked" else "causal",
        "activation_checkpointing": t.activation_checkpointing,
    }
    if m.custom is not None:
        model.update(d_model=m.custom.hidden, n_layers=m.custom.layers, n_heads=m.custom.heads,
                     n_kv_heads=m.custom.kv_heads, ffn_hidden=m.custom.ffn_hidden, max_seq_len=m.custom.seq_len)
    return model


def train_raw(run: Run) -> dict[str, Any]:
    spec, t = run.spec, run.spec.training
    raw: dict[str, Any] = {
        "run": run.name,
        "storage_uri": run_root(run),
        "data": {"path": dataset_uri(run), "seed": t.seed},
        "model": _model_overrides(spec),
        "optim": {"lr": t.optimizer.lr, "weight_decay": t.optimizer.weight_decay, "beta1": t.optimizer.beta1,
                  "beta2": t.optimizer.beta2, "grad_clip": t.optimizer.grad_clip},
        "schedule": {"warmup_steps": t.optimizer.warmup_steps, "min_lr_ratio": t.optimizer.min_lr_ratio,
                     "max_steps": t.max_steps, "max_tokens": t.max_tokens},
        "batch": {"global_batch_size": t.global_batch_size, "micro_batch_size": t.micro_batch_size},
        "precision": {"bf16": t.precision == "bf16", "fp16": t.precision == "fp16"},
        "zero": {"stage": t.zero.stage, "offload_optimizer": t.zero.offload_optimizer,
                 "offload_param": t.zero.offload_params},
        "checkpoint": {"every_steps": t.checkpoint.interval_steps, "keep_last": t.checkpoint.keep},
        "early_stop": {"eval_every_steps": t.eval_interval_steps},
        "monitor": {"prometheus_port": METRICS_PORT},
        "seed": t.seed,
    }
    if spec.model.custom is not None:
        raw["batch"]["seq_len"] = spec.model.custom.seq_len
    if t.early_stopping is not None:
        raw["early_stop"].update(patience=t.early_stopping.patience, min_delta=t.early_stopping.min_delta)
    if t.distillation is not None:
        teacher = _layout(spec, run.namespace, t.distillation.teacher_run).checkpoints()
        raw["distill"] = {"teacher": teacher, "alpha": t.distillation.alpha,
                          "temperature": t.distillation.temperature}
    if spec.model.init_from is not None:
        layout = _layout(spec, run.namespace, spec.model.init_from.run)
        step = spec.model.init_from.step
        raw["checkpoint"]["init_from"] = layout.checkpoint(step) if step is not None else layout.checkpoints()
    if spec.model.custom is None:
        raw["preset"] = spec.model.preset
    return raw


def train_config(run: Run) -> TrainConfig:
    return apply_preset(train_raw(run))


def export_raw(run: Run) -> dict[str, Any]:
    layout = _layout(run.spec, run.namespace, run.name)
    raw: dict[str, Any] = {
        "checkpoints_uri": layout.checkpoints(),
        "model_repository": layout.model_repository(),
        # One model per serving target, so successive runs add versions to it (see rollout.model_name).
        "model_name": run.spec.serving.target if run.spec.serving is not None else run.name,
        "int8": run.spec.serving is not None and run.spec.serving.quantization == "int8",
        "run": run.name,
    }
    if run.spec.serving is not None and run.spec.serving.gate_prompts:
        raw["reference_prompts"] = list(run.spec.serving.gate_prompts)
    return raw


def export_config(run: Run) -> ExportConfig:
    return ExportConfig.from_dict(export_raw(run))


def build_config_map(run: Run) -> dict[str, Any]:
    """``<run>-config`` with one file per step, mounted at /etc/kiln in every trainer pod."""
    # Validate with the step types first (raises ValueError naming the field).
    prepare_config(run), train_config(run), export_config(run)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(run, child_name(run, STAGE), STAGE),
        "data": {
            "prepare.yaml": yaml.safe_dump(prepare_raw(run), sort_keys=True),
            "train.yaml": yaml.safe_dump(train_raw(run), sort_keys=True),
            "export.yaml": yaml.safe_dump(export_raw(run), sort_keys=True),
        },
    }
