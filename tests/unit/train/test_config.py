"""Config validation, presets, batch arithmetic and the DeepSpeed config function."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln_api.train_config import ConfigError, TrainConfig
from kiln_api.train_presets import PRESETS, apply_preset
from kiln_trainer.train import main as train_main
from kiln_trainer.train.ds_config import batch_arithmetic, deepspeed_config
from kiln_trainer.train.launch import LaunchError, read_env
from kiln_trainer.train.model import count_params

BASE = {"preset": "tiny_cpu", "run": "r", "storage_uri": "file:///tmp/x", "data": {"path": "/tmp/d"}}


def _cfg(**over: dict) -> TrainConfig:
    raw = {**BASE, **over}
    return apply_preset(raw)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"zero": {"stage": 2, "offload_params": True}}, "zero.offload_params"),
        ({"precision": {"bf16": True, "fp16": True}}, "precision.fp16"),
        ({"precision": {"bf16": True}, "zero": {"stage": 0}}, "precision.bf16"),
        ({"batch": {"global_batch_size": 10, "micro_batch_size": 4}}, "batch.global_batch_size"),
        ({"batch": {"seq_len": 256}}, "batch.seq_len"),
        ({"model": {"n_heads": 3}}, "model.n_heads"),
        ({"model": {"n_kv_heads": 3}}, "model.n_kv_heads"),
        ({"schedule": {"max_tokens": 1000}}, "schedule.max_steps"),
        ({"model": {"arch": "lstm"}}, "model.arch"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"model": {"widht": 3}}, "model.widht"),
        ({"checkpoint": {"resume": "maybe"}}, "checkpoint.resume"),
        ({"run": "a/b"}, "run"),
    ],
)
def test_bad_config_names_the_field(override: dict, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        _cfg(**override)
    assert str(e.value).startswith(f"{field}:"), str(e.value)


def test_batch_not_divisible_by_world() -> None:
    cfg = _cfg()
    assert cfg.check_world(2) == 1
    with pytest.raises(ConfigError, match=r"^batch.global_batch_size: global_batch_size=8 is not a multiple of micro_batch_size=4 × world_size=3"):
        cfg.check_world(3)


def test_vocab_mismatch_with_data() -> None:
    with pytest.raises(ConfigError, match=r"^model.vocab_size: 2048 is smaller than .*vocab_size=4000"):
        _cfg().check_data(4000, None)
    with pytest.raises(ConfigError, match=r"^model.objective"):
        _cfg(model={"objective": "masked"}).check_data(300, None)


def test_bad_config_rejected_before_any_compute(text_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compute(*a: object) -> None:
        raise AssertionError("the process group was started for a bad config")

    monkeypatch.setattr(train_main, "init_process_group", no_compute)
    cfg = apply_preset({**BASE, "data": {"path": str(text_dataset)}, "model": {"vocab_size": 100}})
    with pytest.raises(ConfigError, match="^model.vocab_size"):
        train_main.run_training(cfg)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(ConfigError, match="^batch.global_batch_size"):
        train_main.run_training(_cfg(data={"path": str(text_dataset)}))


def test_config_file_with_preset_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("preset: gpt_125m\nrun: big\nstorage_uri: s3://kiln/a\ndata: {path: s3://kiln/a/datasets/x}\n"
                    "zero: {stage: 3, offload_params: true}\n")
    cfg = train_main.load_config(str(path))
    assert (cfg.model.d_model, cfg.zero.stage, cfg.zero.offload_params, cfg.precision.bf16) == (768, 3, True, True)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(("name", "low", "high"),
                         [("tiny_cpu", 5e4, 5e5), ("gpt_125m", 1.1e8, 1.4e8), ("gpt_1b", 1.0e9, 1.5e9),
                          ("gpt_7b", 6.0e9, 7.5e9)])
def test_presets_have_their_advertised_size(name: str, low: float, high: float) -> None:
    n = count_params(PRESETS[name]().model)
    assert low <= n <= high, n


@pytest.mark.parametrize(("g", "m", "w", "acc"), [(8, 4, 1, 2), (8, 4, 2, 1), (256, 8, 4, 8), (512, 1, 64, 8)])
def test_batch_arithmetic(g: int, m: int, w: int, acc: int) -> None:
    assert batch_arithmetic(g, m, w) == acc
    assert m * acc * w == g


def test_batch_arithmetic_rejects() -> None:
    with pytest.raises(ConfigError, match="micro_batch_size=4 × world_size=3"):
        batch_arithmetic(8, 4, 3)
    with pytest.raises(ConfigError, match="^world_size"):
        batch_arithmetic(8, 4, 0)


def test_deepspeed_config_sections() -> None:
    ds = deepspeed_config(_cfg(precision={"bf16": True}, zero={"stage": 3, "offload_params": True,
                                                                "offload_optimizer": True}), 2)
    assert ds["train_batch_size"] == 8 and ds["gradient_accumulation_steps"] == 1
    assert ds["bf16"] == {"enabled": True} and ds["data_types"] == {"grad_accum_dtype": "fp32"}
    assert "fp16" not in ds
    z = ds["zero_optimization"]
    assert z["stage"] == 3 and z["offload_param"]["device"] == "cpu" and z["offload_optimizer"]["device"] == "cpu"
    assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["torch_adam"] is False
    fp16 = deepspeed_config(_cfg(precision={"fp16": True}, model={"activation_checkpointing": True}), 1)
    assert deepspeed_config(_cfg(precision={"bf16": True}, zero={"stage": 1}), 1)["zero_optimization"]["stage"] == 1
    assert fp16["fp16"]["loss_scale"] == 0 and fp16["fp16"]["initial_scale_power"] == 16
    assert "bf16" not in fp16 and "data_types" not in fp16 and "activation_checkpointing" in fp16
    assert deepspeed_config(_cfg(), 1)["zero_optimization"] == {"stage": 0}


def test_launch_env_from_pytorchjob_and_torchrun() -> None:
    job = read_env({"MASTER_ADDR": "run-master-0", "MASTER_PORT": "23456", "RANK": "2", "WORLD_SIZE": "4"})
    assert (job.rank, job.world_size, job.master_addr, job.master_port) == (2, 4, "run-master-0", 23456)
    tr = read_env({"MASTER_ADDR": "h", "MASTER_PORT": "1", "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                   "PET_NPROC_PER_NODE": "2"})
    assert tr.local_rank == 1
    with pytest.raises(LaunchError, match="torchrun"):
        read_env({"PET_NPROC_PER_NODE": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h"})
    with pytest.raises(LaunchError, match="RANK=4"):
        read_env({"RANK": "4", "WORLD_SIZE": "4", "MASTER_ADDR": "h"})
    assert read_env({}).world_size == 1


def test_unreadable_config_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("schedule: {max_steps: 20\nbatch: {x: 1}}\n")
    with pytest.raises(ConfigError, match=r"^--config: cannot read .*bad.yaml"):
        train_main.load_config(str(bad))
    with pytest.raises(ConfigError, match="^--config: cannot read"):
        train_main.load_config(str(tmp_path / "missing.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="^config: must be a mapping"):
        train_main.load_config(str(tmp_path / "list.yaml"))
