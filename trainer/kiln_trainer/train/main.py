"""`kiln-trainer train --config FILE`: read the config, build, train, clean up.

Reads top-down: every check that needs no compute (config, world size, dataset vocabulary) runs
before the process group and the model exist.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from kiln_api import contract
from kiln_api.train_config import ConfigError, TrainConfig
from kiln_api.train_presets import apply_preset

from kiln_trainer.train import build, launch
from kiln_trainer.train.checkpoint import Checkpointer
from kiln_trainer.train.ckpt_owners import engine_owners
from kiln_trainer.train.data import load_splits
from kiln_trainer.train.ds_config import deepspeed_config
from kiln_trainer.train.faults import PreemptionFlag
from kiln_trainer.train.launch import init_process_group, read_env
from kiln_trainer.train.loop import Hooks, Outcome, Trainer
from kiln_trainer.train.metrics import ProgressCallback, peak_flops
from kiln_trainer.train.model import count_params, flops_per_token
from kiln_trainer.train.pipeline import PipelineTrainer
from kiln_trainer.train.status_sink import status_progress_from_env

log = logging.getLogger("kiln.train")


def load_config(path: str) -> TrainConfig:
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"--config: cannot read {path}: {e}") from e
    return apply_preset(raw)


def run_training(cfg: TrainConfig, hooks: Hooks | None = None,
                 progress: list[ProgressCallback] | None = None) -> Outcome:
    env = read_env()
    accum = cfg.check_world(env.world_size)
    splits = load_splits(cfg.data.path, cfg.data.train_split, cfg.data.val_split,
                         Path(cfg.checkpoint.local_dir) / "data-cache")
    cfg.check_data(splits.vocab_size, splits.mask_id)
    device = init_process_group(env)
    if env.rank == 0:
        log.info("effective config:\n%s", json.dumps(cfg.to_dict(), indent=2))
        log.info("deepspeed config:\n%s", json.dumps(deepspeed_config(cfg, env.world_size), indent=2))
    model = build.build_model(cfg)
    n_params = count_params(cfg.model)
    engine = build.build_engine(cfg, model, env.world_size)
    store, ckpts = build.open_run_store(cfg)
    extra = [splits.tokenizer_path] if splits.tokenizer_path else []
    ckpt = Checkpointer(cfg, ckpts, env.rank, env.world_size, extra_files=extra)
    if engine.mpu is not None:  # model parallel: files are named by (data, model) rank, not global rank
        ckpt.owner = engine_owners(engine, env.rank, env.world_size)
    data_rank, replicas = build.data_coords(engine, env.rank, env.world_size)
    trainer_class = PipelineTrainer if cfg.parallel.pipeline > 1 else Trainer
    sinks = build.build_sinks(cfg, store, env.rank, progress)
    preempt = PreemptionFlag(cfg.faults.sigterm_grace_seconds)
    try:
        trainer = trainer_class(cfg, engine, splits, ckpt, sinks, rank=data_rank, world=replicas, accum=accum,
                          device=device, flops_per_token=flops_per_token(cfg.model, cfg.batch.seq_len, n_params),
                          peak_flops=peak_flops(cfg.monitor.peak_tflops),
                          distill=build.build_teacher(cfg, device), hooks=hooks)
        state = ckpt.resume(engine)
        if state is not None:
            trainer.restore(state)
        outcome = trainer.run(preempt)
        log.info("training %s at step %d (%d tokens)", outcome.reason, outcome.state.step, outcome.state.tokens)
        return outcome
    finally:
        ckpt.wait()
        sinks.close()
        preempt.close()


def main(config_path: str) -> int:
    """The pod's entry point; returns an exit code of the pod contract (kiln_api.contract)."""
    gang = launch.pod_gang()
    # Rank-0 logging: other ranks only report warnings and errors; a pod starting torchrun logs its launch.
    level = logging.INFO if gang is not None or os.environ.get(contract.ENV_RANK, "0") == "0" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(config_path)
    # Checked before torchrun starts: a rank's ConfigError would reach the pod only as torchrun's 1.
    cfg.check_world(launch.world_size())
    if gang is not None:
        return launch.run_torchrun(gang, config_path)
    status = status_progress_from_env()
    outcome: Any = run_training(cfg, progress=[status] if status else None)
    return contract.EXIT_PREEMPTED if outcome.reason == "preempted" else contract.EXIT_OK


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m kiln_trainer.train.main CONFIG_FILE")
    sys.exit(main(sys.argv[1]))
