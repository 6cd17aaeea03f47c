"""Each GPU preset, compiled by the operator's compiler for 2 nodes × 2 GPUs, rehearsed on CPU.

Only the model's width, depth and sequence length shrink (``rehearsal.shrink_model``, the documented
test-only override); ZeRO stage, offload, activation checkpointing, precision, batch arithmetic and
accumulation, schedule and checkpoint layout run as compiled. The gang is 2 "pods" × 2 processes on
this machine: two ``kiln-trainer train`` processes, each with the environment its pod would get,
each starting torchrun for its two ranks — the pod contract's path, without the cluster (the
cluster's copy of that path is test_multiprocess_pods.py). 5 steps, one committed checkpoint, then
``kiln-trainer export`` consolidates the ZeRO shards into a served model version.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kiln_api import contract
from kiln_api.train_config import TrainConfig
from kiln_trainer.train.ds_config import deepspeed_config
from kiln_trainer.train.rehearsal import (
    GPU_PRESETS,
    SHRUNK_PATHS,
    changed_paths,
    compile_preset,
    relocate,
    shrink_model,
)

pytestmark = pytest.mark.timeout(1500)
ROOT = Path(__file__).resolve().parents[2]
NODES, NPROC, STEPS = 2, 2, 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "RANK", "WORLD_SIZE", "MASTER_"))}
    return {**env, "DS_ACCELERATOR": "cpu"}


def _write(path: Path, body: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body, sort_keys=True))
    return str(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage root holding the dataset every preset's compiled prepare.yaml asks for."""
    root = tmp_path_factory.mktemp("rehearsal")
    compiled = compile_preset(GPU_PRESETS[0], name="prep", nodes=NODES, gpus_per_node=NPROC, max_steps=STEPS)
    cfg = _write(root / "prepare.yaml", relocate(compiled.raw["prepare.yaml"], f"file://{root}/store"))
    out = subprocess.run([sys.executable, "-m", "kiln_trainer.cli", "prepare", "--config", cfg], cwd=ROOT,
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return root


def _run_pods(configs: list[str], logs: Path) -> list[str]:
    """Start one `kiln-trainer train` per pod with its pod's environment; returns their logs."""
    port, procs = _free_port(), []
    for node_rank, cfg in enumerate(configs):
        env = {**_env(), contract.ENV_NNODES: str(NODES), contract.ENV_NPROC_PER_NODE: str(NPROC),
               contract.ENV_NODE_RANK: str(node_rank), contract.ENV_RANK: str(node_rank),
               contract.ENV_WORLD_SIZE: str(NODES * NPROC), contract.ENV_MASTER_ADDR: "127.0.0.1",
               contract.ENV_MASTER_PORT: str(port)}
        log = (logs / f"pod{node_rank}.log").open("w")
        procs.append(subprocess.Popen([sys.executable, "-m", "kiln_trainer.cli", "train", "--config", cfg],
                                      cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        codes = [p.wait(timeout=1200) for p in procs]
    finally:
        for p in procs:  # a pod that outlived the test must not keep the CPUs busy
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = [(logs / f"pod{i}.log").read_text() for i in range(len(configs))]
    assert codes == [0] * len(configs), "\n\n".join(t[-3000:] for t in texts)
    return texts


@pytest.mark.parametrize("preset", GPU_PRESETS)
def test_gpu_preset_as_compiled_trains_commits_and_exports_on_cpu(store: Path, tmp_path: Path, preset: str) -> None:
    name = preset.replace("_", "-")
    compiled = compile_preset(preset, name=name, nodes=NODES, gpus_per_node=NPROC, max_steps=STEPS,
                              checkpoint_every=STEPS)
    root = f"file://{store}/store"
    train = relocate(compiled.raw["train.yaml"], root)
    rehearsed = shrink_model(train)
    assert changed_paths(train, rehearsed) <= SHRUNK_PATHS
    as_compiled, as_run = TrainConfig.from_dict(train), TrainConfig.from_dict(rehearsed)
    ds = deepspeed_config(as_run, compiled.world_size)
    assert ds == deepspeed_config(as_compiled, compiled.world_size)  # ZeRO, offload, precision, batch: same
    accum = ds["gradient_accumulation_steps"]
    assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * accum * NODES * NPROC
    # Each pod has its own emptyDir and network namespace; here both "pods" share one host, so the
    # local checkpoint dir and rank 0's metrics port move (where, not what).
    metrics_port = _free_port()
    configs = [_write(tmp_path / f"pod{i}.yaml", relocate(rehearsed, root, monitor__prometheus_port=metrics_port,
                                                          checkpoint__local_dir=str(tmp_path / f"pod{i}" / "ckpt")))
               for i in range(NODES)]

    logs = _run_pods(configs, tmp_path)
    for node_rank, text in enumerate(logs):
        assert f"torchrun --nnodes={NODES} --nproc-per-node={NPROC} --node-rank={node_rank}" in text

    run_dir = store / "store" / "rehearsal" / "runs" / name
    records = [json.loads(line) for line in (run_dir / "metrics" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]  # every monitor.log_every steps and the last one, as compiled
    assert steps and steps[-1]["step"] == STEPS
    assert all(math.isfinite(r["loss"]) for r in steps)
    assert steps[-1]["tokens"] == STEPS * as_run.batch.global_batch_size * as_run.batch.seq_len
    committed = sorted(p.parent.name for p in (run_dir / "checkpoints").glob("*/COMMITTED"))
    assert committed == [f"step-{STEPS:08d}"]
    manifest = json.loads((run_dir / "checkpoints" / committed[0] / "manifest.json").read_text())
    assert manifest["world_size"] == NODES * NPROC
    shard_ranks = {n.split("zero_pp_rank_")[1].split("_")[0] for n in manifest["files"] if "zero_pp_rank_" in n}
    assert shard_ranks == {str(r) for r in range(NODES * NPROC)}, sorted(manifest["files"])

    export_cfg = _write(tmp_path / "export.yaml", relocate(compiled.raw["export.yaml"], root))
    out = subprocess.run([sys.executable, "-m", "kiln_trainer.cli", "export", "--config", export_cfg], cwd=ROOT,
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])["exported"]
    version = Path(summary["uri"].removeprefix("file://"))
    model_config = json.loads((version / "model_config.json").read_text())
    assert (model_config["d_model"], model_config["n_layers"]) == (rehearsed["model"]["d_model"], 2)
    assert (version / "weights.safetensors").stat().st_size > 0
