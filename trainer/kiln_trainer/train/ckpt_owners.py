"""Which rank uploads each file of a model-parallel checkpoint: the rank that wrote it.

With pipeline or tensor parallelism, DeepSpeed names files by data-parallel rank D and model-parallel
rank M, not by global rank: ``zero_pp_rank_<D>_mp_rank_<M>_optim_states.pt`` (each rank's ZeRO
shard), ``mp_rank_<M>_model_states.pt`` and ``layer_<i>-model_states.pt`` (written by the first
data-parallel replica of that model slice / stage). Pods do not share a disk, so only the writer has
the file: every rank's coordinates are gathered once, and each file name maps back to its writer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from kiln_trainer.train.checkpoint import owner_rank

_ZERO = re.compile(r"zero_pp_rank_(\d+)_mp_rank_(\d+)_")
_MODEL = re.compile(r"^mp_rank_(\d+)_model_states\.pt$")
_LAYER = re.compile(r"^layer_(\d+)-")
_KILN = re.compile(r"^kiln_rank_(\d+)\.pt$")


@dataclass(frozen=True)
class Coords:
    """One rank's place: data-parallel rank, model-parallel rank, pipe layers [start, stop)."""

    rank: int
    dp: int
    mp: int
    layers: tuple[int, int] | None


def owner_map(coords: list[Coords]) -> Callable[[str], int]:
    """File name → the global rank that wrote it (rank 0 for anything else: model_config.json, ...)."""
    def find(dp: int, mp: int | None = None, layer: int | None = None) -> int:
        for c in coords:
            if c.dp == dp and (mp is None or c.mp == mp) and (
                    layer is None or (c.layers is not None and c.layers[0] <= layer < c.layers[1])):
                return c.rank
        raise ValueError(f"no rank has data-parallel rank {dp}, model-parallel rank {mp}, layer {layer}")

    def owner(name: str) -> int:
        if m := _KILN.match(name):
            return int(m.group(1))
        if m := _ZERO.search(name):
            return find(int(m.group(1)), int(m.group(2)))
        if m := _MODEL.match(name):
            return find(0, int(m.group(1)))
        if m := _LAYER.match(name):
            return find(0, layer=int(m.group(1)))
        return owner_rank(name)
    return owner


def engine_owners(engine: Any, rank: int, world: int) -> Callable[[str], int]:
    """Gather every rank's coordinates from its engine (a collective: call on every rank)."""
    mpu = engine.mpu
    module = engine.module
    layers = (module._local_start, module._local_stop) if hasattr(module, "_local_start") else None
    mine = Coords(rank, mpu.get_data_parallel_rank(), mpu.get_model_parallel_rank(), layers)
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, mine)
    return owner_map(everyone)
