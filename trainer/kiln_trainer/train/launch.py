"""The trainer's side of the pod contract (``kiln_api.contract``): read the environment, start the ranks.

A pod runs ``kiln-trainer train`` once, whatever its process count. Three cases, told apart by the
environment alone:

- a pod asking for several processes (``PET_NPROC_PER_NODE`` > 1, no ``LOCAL_RANK``): :func:`pod_gang`
  describes the pod's place in the gang and :func:`run_torchrun` starts torchrun inside the pod, one
  process per rank, each with its local rank;
- a rank (torchrun set ``LOCAL_RANK``, ``RANK`` and ``WORLD_SIZE``), or a one-process pod whose
  ``RANK``/``WORLD_SIZE`` the launcher set: :func:`read_env`;
- a bare ``kiln-trainer train`` on a laptop: a world of one.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kiln_api import contract as c

log = logging.getLogger("kiln.train")


class LaunchError(ValueError):
    """The environment does not describe a usable process group; names the variable.

    A ValueError, so ``kiln-trainer`` exits with ``EXIT_BAD_CONFIG``: a restart cannot repair a pod's env.
    """


@dataclass(frozen=True)
class DistEnv:
    """One rank's view of the process group."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        if default is None:
            raise LaunchError(f"environment variable {name} is not set")
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise LaunchError(f"environment variable {name}={raw!r} is not an integer") from e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_world(env: Mapping[str, str], world: int) -> None:
    """WORLD_SIZE must be pods × processes per pod when the launcher says how many of each."""
    if c.ENV_NNODES not in env:
        return
    expected = _int(env, c.ENV_NNODES) * _int(env, c.ENV_NPROC_PER_NODE, 1)
    if world != expected:
        raise LaunchError(f"{c.ENV_WORLD_SIZE}={world} but {c.ENV_NNODES} × {c.ENV_NPROC_PER_NODE} = {expected}")


def pod_gang(env: Mapping[str, str] | None = None) -> c.Gang | None:
    """The pod's place in its gang when it must start torchrun itself, else None (pure: pass `env`)."""
    env = os.environ if env is None else env
    nproc = _int(env, c.ENV_NPROC_PER_NODE, 1)
    if c.ENV_LOCAL_RANK in env or nproc <= 1:
        return None
    nnodes = _int(env, c.ENV_NNODES, 1)
    # A PyTorchJob's RANK is the pod's index; PET_NODE_RANK says the same where the controller sets it.
    rank_var = c.ENV_NODE_RANK if c.ENV_NODE_RANK in env else c.ENV_RANK
    node_rank = _int(env, rank_var, 0 if nnodes == 1 else None)
    if not 0 <= node_rank < nnodes:
        raise LaunchError(f"{c.ENV_NODE_RANK}={node_rank} must be in [0, {c.ENV_NNODES}={nnodes})")
    if nnodes > 1 and not env.get(c.ENV_MASTER_ADDR):
        raise LaunchError(f"{c.ENV_NNODES}={nnodes} but {c.ENV_MASTER_ADDR} is not set")
    port = _int(env, c.ENV_MASTER_PORT, c.RENDEZVOUS_PORT if nnodes > 1 else _free_port())
    return c.Gang(nnodes, nproc, node_rank, env.get(c.ENV_MASTER_ADDR) or "127.0.0.1", port)


def read_env(env: Mapping[str, str] | None = None) -> DistEnv:
    """This rank's place in the process group (pure: pass `env` to test)."""
    env = os.environ if env is None else env
    if pod_gang(env) is not None:
        raise LaunchError(f"{c.ENV_NPROC_PER_NODE}={env[c.ENV_NPROC_PER_NODE]} asks for several processes "
                          "per pod: start through `kiln-trainer train`, which runs torchrun")
    world = _int(env, c.ENV_WORLD_SIZE, 1)
    rank = _int(env, c.ENV_RANK, 0)
    if world < 1 or not 0 <= rank < world:
        raise LaunchError(f"{c.ENV_RANK}={rank} must be in [0, {c.ENV_WORLD_SIZE}={world})")
    _check_world(env, world)
    if world > 1 and c.ENV_MASTER_ADDR not in env:
        raise LaunchError(f"{c.ENV_WORLD_SIZE}={world} but {c.ENV_MASTER_ADDR} is not set")
    port = _int(env, c.ENV_MASTER_PORT, c.RENDEZVOUS_PORT if world > 1 else _free_port())
    return DistEnv(rank, world, _int(env, c.ENV_LOCAL_RANK, 0), env.get(c.ENV_MASTER_ADDR, "127.0.0.1"), port)


def world_size(env: Mapping[str, str] | None = None) -> int:
    """Ranks in the whole gang, as seen from the pod or from any rank."""
    gang = pod_gang(env)
    return gang.world_size if gang is not None else read_env(env).world_size


def gang_exit_code(codes: Iterable[int]) -> int:
    """One exit code for the pod from its ranks': a permanent failure wins, then preemption, then 1."""
    seen = set(codes)
    for code in (*c.PERMANENT_EXIT_CODES, c.EXIT_PREEMPTED):
        if code in seen:
            return code
    return c.EXIT_FAILED if seen - {c.EXIT_OK} else c.EXIT_OK


def run_torchrun(gang: c.Gang, config_path: str) -> int:
    """Start the pod's ranks under torchrun (in this process) and return the pod's exit code.

    torchrun's own exit status is 1 for any failed rank; the ranks' codes are read from its error
    instead, so a bad config still exits with EXIT_BAD_CONFIG and is never retried.
    """
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    # After SIGTERM torchrun waits this long for the ranks' emergency checkpoint before SIGKILL.
    os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(c.TERMINATION_GRACE_SECONDS - 10))
    args = c.torchrun_args(gang, config_path)
    log.info("node %d/%d: torchrun %s", gang.node_rank, gang.nnodes, " ".join(args))
    try:
        torchrun_main(args)
    except ChildFailedError as e:
        return gang_exit_code(f.exitcode for f in e.failures.values())
    except SignalException:
        return c.EXIT_PREEMPTED
    return c.EXIT_OK


def init_process_group(de: DistEnv) -> str:
    """Start torch.distributed through DeepSpeed (gloo on CPU, nccl on GPU); returns the device."""
    import torch

    use_cuda = torch.cuda.is_available()
    if not use_cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read by deepspeed at import
    for key, value in ((c.ENV_RANK, de.rank), (c.ENV_WORLD_SIZE, de.world_size), (c.ENV_LOCAL_RANK, de.local_rank),
                       (c.ENV_MASTER_ADDR, de.master_addr), (c.ENV_MASTER_PORT, de.master_port)):
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
