"""Process-group setup from the environment a PyTorchJob pod or torchrun provides.

torchrun (and a PyTorchJob whose pods run torchrun, configured through PET_* variables) sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for each worker. A PyTorchJob pod that
runs the trainer directly (one process per pod) gets MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE
from the operator. A bare `kiln-trainer train` is a world of one.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


class LaunchError(RuntimeError):
    """The environment does not describe a usable process group; names the variable."""


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise LaunchError(f"environment variable {name}={raw!r} is not an integer") from e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_env(env: dict[str, str] | None = None) -> DistEnv:
    """Rank, world size and rendezvous address from the environment (pure: pass `env` to test)."""
    env = dict(os.environ) if env is None else env
    nproc = _int(env, "PET_NPROC_PER_NODE", 1)
    if nproc > 1 and "LOCAL_RANK" not in env:
        raise LaunchError(
            f"PET_NPROC_PER_NODE={nproc} asks for several processes per pod: start the trainer under torchrun"
        )
    world = _int(env, "WORLD_SIZE", 1)
    rank = _int(env, "RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise LaunchError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    if world > 1 and "MASTER_ADDR" not in env:
        raise LaunchError(f"WORLD_SIZE={world} but MASTER_ADDR is not set")
    port = _int(env, "MASTER_PORT", 0) or (29500 if world > 1 else _free_port())
    return DistEnv(rank, world, _int(env, "LOCAL_RANK", 0), env.get("MASTER_ADDR", "127.0.0.1"), port)


def init_process_group(de: DistEnv) -> str:
    """Start torch.distributed through DeepSpeed (gloo on CPU, nccl on GPU); returns the device."""
    import torch

    use_cuda = torch.cuda.is_available()
    if not use_cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read by deepspeed at import
    for key, value in (("RANK", de.rank), ("WORLD_SIZE", de.world_size), ("LOCAL_RANK", de.local_rank),
                       ("MASTER_ADDR", de.master_addr), ("MASTER_PORT", de.master_port)):
        os.environ.setdefault(key, str(value))
    import deepspeed
    import torch.distributed as dist

    if not use_cuda:
        # DeepSpeed's CPU backend would JIT-compile a shared-memory allreduce (a C++ build on every
        # fresh machine, serialized across processes by a file lock) that assumes every rank shares
        # one host's /dev/shm. Our ranks are pods on separate nodes: gloo over TCP is the right path.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(de.local_rank)
        return f"cuda:{de.local_rank}"
    return "cpu"
