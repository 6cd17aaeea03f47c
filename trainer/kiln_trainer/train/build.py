"""Building the pieces a run needs: engine, storage, checkpointer, sinks, teacher."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from kiln_api.s3layout import RunLayout, StorageURI
from kiln_api.train_config import TrainConfig

from kiln_trainer.storage import Store, open_store
from kiln_trainer.train.commit import RunCheckpoints
from kiln_trainer.train.distill import DistillLoss, load_teacher
from kiln_trainer.train.ds_config import deepspeed_config
from kiln_trainer.train.metrics import (
    JsonlSink,
    ProgressCallback,
    ProgressSink,
    PrometheusSink,
    Sink,
    Sinks,
    TensorBoardSink,
    progress_to_file,
    progress_to_store,
)
from kiln_trainer.train.model import GPT
from kiln_trainer.train.weights import load_weights

log = logging.getLogger("kiln.train")


def run_key(cfg: TrainConfig, full_uri: str) -> str:
    """A RunLayout URI as a key relative to the store rooted at cfg.storage_uri."""
    root = str(StorageURI.parse(cfg.storage_uri, field="storage_uri"))
    return full_uri[len(root) :].strip("/")


def layout(cfg: TrainConfig) -> RunLayout:
    return RunLayout(StorageURI.parse(cfg.storage_uri, field="storage_uri"), cfg.run)


def open_run_store(cfg: TrainConfig) -> tuple[Store, RunCheckpoints]:
    store = open_store(cfg.storage_uri, max_concurrency=cfg.checkpoint.upload_concurrency)
    prefix = run_key(cfg, layout(cfg).checkpoints())
    return store, RunCheckpoints(store, prefix, concurrency=cfg.checkpoint.upload_concurrency)


def build_model(cfg: TrainConfig) -> GPT:
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model)
    if cfg.checkpoint.init_from:
        src_cfg, state = load_weights(cfg.checkpoint.init_from)
        if src_cfg != cfg.model:
            raise ValueError(
                f"checkpoint.init_from: {cfg.checkpoint.init_from} holds a different model config ({src_cfg})"
            )
        model.load_state_dict(state)
        log.info("initialised weights from %s", cfg.checkpoint.init_from)
    return model


def build_engine(cfg: TrainConfig, model: GPT, world: int) -> Any:
    """The DeepSpeed engine for the run's layout: data parallel, pipeline (PipelineEngine) or tensor parallel."""
    import deepspeed
    import torch.distributed as dist

    if cfg.parallel.pipeline > 1:
        from kiln_trainer.train.pipeline import build_pipeline_engine

        return build_pipeline_engine(cfg, model, world)
    if cfg.parallel.tensor > 1:
        from kiln_trainer.train.tensor_parallel import build_tensor_parallel_engine

        return build_tensor_parallel_engine(cfg, model, dist.get_rank(), world)
    ds = deepspeed_config(cfg, world)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
    if world == 1 and cfg.zero.stage == 0:
        # One rank has nothing to all-reduce; DeepSpeed would still flatten, reduce and copy back
        # every gradient at each boundary (~10% of a CPU step in bench_trainer).
        engine.enable_backward_allreduce = False
    return engine


def data_coords(engine: Any, rank: int, world: int) -> tuple[int, int]:
    """(data-parallel rank, replicas): the coordinates that pick a rank's sequences of each batch."""
    mpu = engine.mpu
    if mpu is None:
        return rank, world
    return mpu.get_data_parallel_rank(), mpu.get_data_parallel_world_size()


def build_teacher(cfg: TrainConfig, device: str) -> DistillLoss | None:
    if not cfg.distill.teacher:
        return None
    dtype = torch.bfloat16 if cfg.precision.bf16 else torch.float16 if cfg.precision.fp16 else torch.float32
    teacher = load_teacher(cfg.distill.teacher, cfg.model.vocab_size, dtype, torch.device(device))
    return DistillLoss(cfg.distill, teacher)


def build_sinks(cfg: TrainConfig, store: Store, rank: int, extra: list[ProgressCallback] | None = None) -> Sinks:
    """All configured sinks on rank 0; the null object (no sinks) elsewhere."""
    if rank != 0:
        return Sinks([])
    lay, local = layout(cfg), Path(cfg.checkpoint.local_dir) / cfg.run
    sinks: list[Sink] = [JsonlSink(local / "metrics.jsonl", store, run_key(cfg, lay.metrics()))]
    callbacks = [progress_to_store(store, run_key(cfg, lay.progress())), *(extra or [])]
    if cfg.monitor.progress_file:
        callbacks.append(progress_to_file(Path(cfg.monitor.progress_file)))
    sinks.append(ProgressSink(callbacks))
    if cfg.monitor.tensorboard:
        sinks.append(TensorBoardSink(local / "tb"))
    if cfg.monitor.prometheus_port:
        sinks.append(PrometheusSink(cfg.monitor.prometheus_port, cfg.run))
    return Sinks(sinks)
