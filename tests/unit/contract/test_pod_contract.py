"""The pod contract end to end without a cluster: the operator's real builders make the pods, the
cluster's part (fieldRefs, Kubeflow's injected variables, torchrun's per-rank variables) is simulated
in ``podenv``, and the trainer's own reader (``kiln_trainer.train.launch``) must find every rank.

A renamed variable on either side changes what the reader finds, so these tests fail on drift.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kiln_api import contract as c
from kiln_api.compiler import RunIdentity, compile_run
from kiln_api.trainingrun import parse_spec
from kiln_operator.builders.common import Run
from kiln_operator.builders.export_job import build_export_job
from kiln_operator.builders.indexed_job import build_indexed_job
from kiln_operator.builders.prepare_job import build_prepare_job
from kiln_operator.builders.pytorchjob import build_pytorchjob
from kiln_trainer.train import launch
from podenv import indexed_job_pods, pytorchjob_pods, torchrun_child_env

ROOT = Path(__file__).resolve().parents[3]
BUILDERS = {"PyTorchJob": (build_pytorchjob, pytorchjob_pods), "IndexedJob": (build_indexed_job, indexed_job_pods)}


def _run(name: str, **training: Any) -> Run:
    raw = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())["spec"])
    raw["training"].update(training)
    return Run(name=name, namespace="team-a", uid="u-1", spec=parse_spec(raw))


CPU_2X2 = {"nodes": 2, "processesPerNode": 2, "microBatchSize": 2, "globalBatchSize": 8}
GPU_4X8 = {"nodes": 4, "gpusPerNode": 8, "accelerator": "nvidia-h100-80gb", "microBatchSize": 1,
           "globalBatchSize": 64, "precision": "bf16"}


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "PyTorchJob":
        return [r["template"]["spec"]["containers"][0] for r in obj["spec"]["pytorchReplicaSpecs"].values()]
    return obj["spec"]["template"]["spec"]["containers"]


@pytest.mark.parametrize("launcher", sorted(BUILDERS))
@pytest.mark.parametrize(("shape", "nodes", "nproc"), [(CPU_2X2, 2, 2), (GPU_4X8, 4, 8)])
def test_each_pod_starts_torchrun_with_its_node_rank_and_each_rank_finds_its_place(
        launcher: str, shape: dict[str, Any], nodes: int, nproc: int) -> None:
    from torch.distributed.run import parse_args

    build, pods_of = BUILDERS[launcher]
    job = build(_run("gang", **shape))
    pods = pods_of(job)
    assert len(pods) == nodes
    ranks = []
    for node_rank, pod in enumerate(pods):
        gang = launch.pod_gang(pod)
        assert gang == c.Gang(nodes, nproc, node_rank, "gang-train-master-0" if launcher == "PyTorchJob"
                              else "gang-train-0.gang-train", c.RENDEZVOUS_PORT)
        assert launch.world_size(pod) == nodes * nproc
        with pytest.raises(launch.LaunchError, match="several processes per pod"):
            launch.read_env(pod)  # the pod itself is no rank: it must start torchrun
        args = parse_args(c.torchrun_args(gang, c.config_path("train")))  # torchrun's own parser
        assert (args.nnodes, args.nproc_per_node, args.node_rank) == (str(nodes), str(nproc), node_rank)
        assert (args.master_addr, args.master_port, args.max_restarts) == (gang.master_addr, gang.master_port, 0)
        assert args.module and args.training_script == c.TRAINER_MODULE
        assert args.training_script_args == ["train", "--config", "/etc/kiln/train.yaml"]
        for local in range(nproc):
            rank_env = torchrun_child_env(pod, nodes, nproc, node_rank, local, (gang.master_addr, 29400))
            assert launch.pod_gang(rank_env) is None
            d = launch.read_env(rank_env)
            assert (d.local_rank, d.world_size) == (local, nodes * nproc)
            ranks.append(d.rank)
    assert ranks == list(range(nodes * nproc))


@pytest.mark.parametrize("launcher", sorted(BUILDERS))
def test_one_process_pods_are_ranks_themselves(launcher: str) -> None:
    build, pods_of = BUILDERS[launcher]
    pods = pods_of(build(_run("solo", nodes=3, globalBatchSize=12)))
    dists = [launch.read_env(p) for p in pods]
    assert [launch.pod_gang(p) for p in pods] == [None] * 3
    assert [(d.rank, d.world_size, d.local_rank) for d in dists] == [(0, 3, 0), (1, 3, 0), (2, 3, 0)]
    assert {d.master_port for d in dists} == {c.RENDEZVOUS_PORT}


def test_every_variable_the_operator_sets_is_declared_in_the_contract() -> None:
    declared = {v for k, v in vars(c).items() if k.startswith("ENV_")} | set(c.writable_env()) | {"PYTHONUNBUFFERED"}
    run = _run("all", **CPU_2X2)
    for obj in (build_prepare_job(run), build_export_job(run), build_pytorchjob(run), build_indexed_job(run)):
        for container in _containers(obj):
            names = [e["name"] for e in container["env"]]
            assert len(names) == len(set(names)), names
            assert set(names) <= declared, set(names) - declared


def test_pods_write_only_below_their_emptydir_and_run_the_contract_command() -> None:
    from kiln_trainer.cli import build_parser

    run = _run("paths", **CPU_2X2)
    compiled = compile_run(run.spec, RunIdentity(run.name, run.namespace))  # what train.yaml asks to write
    writable = [*c.writable_env().values(), c.CHECKPOINT_DIR, c.CACHE_DIR, compiled.train.checkpoint.local_dir]
    for obj in (build_prepare_job(run), build_export_job(run), build_pytorchjob(run), build_indexed_job(run)):
        pod = obj["spec"]["template"]["spec"] if obj["kind"] == "Job" else \
            obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["securityContext"]["runAsNonRoot"] is True
        for path in writable:
            owner = [m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")]
            assert owner and mounts[max(owner, key=len)] in empty_dirs, f"{obj['kind']}: {path} is not on an emptyDir"
        step = container["command"][1]
        assert container["command"] == c.step_command(step)
        assert build_parser().parse_args(container["command"][1:]).config == f"{c.CONFIG_DIR}/{step}.yaml"
        assert mounts[c.CONFIG_DIR] == c.CONFIG_VOLUME


def test_step_jobs_never_retry_a_bad_config() -> None:
    run = _run("codes")
    for obj in (build_prepare_job(run), build_export_job(run), build_indexed_job(run)):
        (rule,) = obj["spec"]["podFailurePolicy"]["rules"]
        (container,) = obj["spec"]["template"]["spec"]["containers"]
        assert rule["action"] == "FailJob"
        assert rule["onExitCodes"] == {"containerName": container["name"], "operator": "In",
                                       "values": [c.EXIT_BAD_CONFIG, c.EXIT_QUANTIZATION_REJECTED]}
        assert obj["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it


@pytest.mark.parametrize(("codes", "pod_code"), [
    ([0, 0], c.EXIT_OK), ([1, 0], c.EXIT_FAILED), ([c.EXIT_PREEMPTED, 1], c.EXIT_PREEMPTED),
    ([1, c.EXIT_BAD_CONFIG, c.EXIT_PREEMPTED], c.EXIT_BAD_CONFIG), ([-9], c.EXIT_FAILED)])
def test_a_pod_exits_with_its_ranks_most_telling_code(codes: list[int], pod_code: int) -> None:
    assert launch.gang_exit_code(codes) == pod_code
    assert c.is_permanent_exit(pod_code) == (pod_code == c.EXIT_BAD_CONFIG)


@pytest.mark.parametrize("preset", ["tiny_cpu", "gpt_125m", "gpt_1b", "gpt_7b"])
def test_every_preset_compiles_its_local_dirs_into_the_pods_emptydir(preset: str) -> None:
    from kiln_trainer.train.rehearsal import compile_preset

    gpu = preset != "tiny_cpu"
    compiled = compile_preset(preset, name="p", nodes=2, gpus_per_node=8 if gpu else 0, max_steps=10) if gpu else \
        compile_run(_run("p").spec, RunIdentity("p", "team-a"))
    assert compiled.train.checkpoint.local_dir.startswith(c.WORK_DIR + "/")
    assert compiled.train.monitor.prometheus_port == c.METRICS_PORT
