"""Saving, uploading, resuming and rolling back DeepSpeed checkpoints across ranks.

Every rank calls `save`: DeepSpeed writes the local folder (its files are never touched again),
then each rank uploads the files it owns in a background thread while training goes on, and
rank 0 commits once all ranks' parts are in (see `commit.py` for the protocol and layout). The
stall a checkpoint costs the loop is the local save only; `wait()` joins the upload.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from kiln_api.s3layout import step_folder
from kiln_api.train_config import TrainConfig

from kiln_trainer.train.commit import MODEL_CONFIG, CheckpointError, IncompatibleCheckpoint, RunCheckpoints
from kiln_trainer.train.model import model_config_json

log = logging.getLogger("kiln.train.checkpoint")
INITIAL = "initial"  # local folder of the starting weights (see save_initial)
_OWNER = re.compile(r"(?:zero_pp_rank_|kiln_rank_)(\d+)")


def owner_rank(name: str) -> int:
    """Which rank uploads a file of the local folder: per-rank ZeRO shards and RNG files belong to
    their rank, everything else (model states, model_config.json) to rank 0."""
    m = _OWNER.search(name)
    return int(m.group(1)) if m else 0


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _broadcast(obj: Any) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class Checkpointer:
    def __init__(self, cfg: TrainConfig, ckpts: RunCheckpoints, rank: int, world: int,
                 extra_files: list[Path] | None = None) -> None:
        self.cfg, self.ckpts, self.rank, self.world = cfg, ckpts, rank, world
        self.extra_files = extra_files or []  # e.g. tokenizer.model, copied into every checkpoint by rank 0
        # Which rank uploads a file; model-parallel runs replace it (kiln_trainer.train.ckpt_owners).
        self.owner = owner_rank
        self.local = Path(cfg.checkpoint.local_dir) / cfg.run
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.last_committed: int | None = None

    # --- save --------------------------------------------------------------------------------

    def save(self, engine: Any, step: int, client_state: dict[str, Any], meta: dict[str, Any], *, sync: bool) -> float:
        """Save `step` on every rank and start its upload; returns the seconds the loop stalled."""
        t0 = time.perf_counter()
        self.wait()
        attempt = None
        if self.rank == 0:
            if step in self.ckpts.committed_steps():  # re-saving after a rollback: never overwrite in place
                self.ckpts.uncommit(step)
            attempt = uuid.uuid4().hex
        attempt = _broadcast(attempt)
        tag = step_folder(step)
        engine.save_checkpoint(str(self.local), tag=tag, client_state=client_state, save_latest=False)
        folder = self.local / tag
        torch.save(rng_state(), folder / f"kiln_rank_{self.rank:05d}.pt")
        if self.rank == 0:
            (folder / MODEL_CONFIG).write_text(model_config_json(self.cfg.model))
            for extra in self.extra_files:
                shutil.copyfile(extra, folder / extra.name)
        dist.barrier()  # every rank's local files are complete before anyone lists the folder
        mine = [p for p in folder.iterdir() if p.is_file() and self.owner(p.name) == self.rank]
        stall = time.perf_counter() - t0
        job = lambda: self._upload(step, attempt, mine, meta)  # noqa: E731
        if sync or not self.cfg.checkpoint.async_upload:
            job()
            self._raise_pending()
        else:
            self._thread = threading.Thread(target=self._guarded, args=(job,), name=f"upload-{tag}", daemon=True)
            self._thread.start()
        return stall

    # --- the starting point, for a rollback before the first commit -------------------------

    def save_initial(self, engine: Any) -> None:
        """Keep the starting weights and optimizer state in the local folder (never uploaded): a loss
        spike before the first commit rolls back to them instead of keeping the spiked weights."""
        engine.save_checkpoint(str(self.local), tag=INITIAL, client_state={}, save_latest=False)
        dist.barrier()

    def load_initial(self, engine: Any) -> None:
        """Restore what `save_initial` kept; raises when it was never saved."""
        path, _ = engine.load_checkpoint(str(self.local), tag=INITIAL, load_module_strict=True,
                                         load_optimizer_states=True, load_lr_scheduler_states=False)
        if path is None:
            raise CheckpointError(f"no initial weights in {self.local / INITIAL} to roll back to")

    def _guarded(self, job: Any) -> None:
        try:
            job()
        except BaseException as e:  # noqa: BLE001 - re-raised in the training thread by wait()
            self._error = e

    def _upload(self, step: int, attempt: str, files: list[Path], meta: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        self.ckpts.upload_part(step, self.rank, attempt, files)
        if self.rank == 0:
            parts = self.ckpts.wait_parts(step, self.world, attempt, timeout=600)
            self.ckpts.commit(step, parts, meta)
            self.last_committed = step
            pruned = self.ckpts.prune(self.cfg.checkpoint.keep_last)
            size = sum(f["size"] for p in parts for f in p["files"])
            log.info("committed %s (%.1f MB in %.1fs; pruned %s)", self.ckpts.folder(step), size / 1e6,
                     time.perf_counter() - t0, pruned or "nothing")
        for old in self.local.glob("step-*"):  # local copies of older steps are no longer needed
            if old.name < step_folder(step):
                shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.local / INITIAL, ignore_errors=True)  # a commit is now the rollback target

    def wait(self) -> None:
        """Block until the pending upload is done; re-raise its failure."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._raise_pending()

    def _raise_pending(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointError(f"checkpoint upload failed: {err}") from err

    # --- load --------------------------------------------------------------------------------

    def _accept(self, manifest: dict[str, Any]) -> None:
        want = self.cfg.compat_hash()
        if manifest.get("config_hash") != want:
            raise IncompatibleCheckpoint(
                f"{self.ckpts.folder(manifest['step'])} was written with config hash "
                f"{manifest.get('config_hash')} but this run's model/batch/data-seed/zero-stage hash is {want}; "
                "use a new run name or restore the original model, batch, data.seed and zero.stage"
            )
        if self.cfg.zero.stage > 0 and manifest.get("world_size") != self.world:
            raise IncompatibleCheckpoint(
                f"{self.ckpts.folder(manifest['step'])} holds ZeRO-{self.cfg.zero.stage} shards of "
                f"{manifest.get('world_size')} ranks; this run has {self.world}"
            )

    def load_newest(self, engine: Any) -> tuple[int, dict[str, Any]] | None:
        """Load the newest valid committed checkpoint on every rank; None if none is committed."""
        self.wait()
        restore = self.local / f"restore-rank{self.rank:05d}"
        found: Any = None
        if self.rank == 0:
            try:
                result = self.ckpts.fetch_newest_valid(lambda s: restore / step_folder(s), accept=self._accept)
                found = None if result is None else result[0]
            except CheckpointError as e:
                found = e
        found = _broadcast(found if not isinstance(found, Exception) else ("error", str(found)))
        if isinstance(found, tuple):
            raise IncompatibleCheckpoint(found[1])
        if found is None:
            if self.ckpts.committed_steps():
                raise CheckpointError(
                    f"{self.ckpts.prefix}: committed checkpoints exist but none verifies; refusing to start "
                    "from scratch (delete them or use a new run name)"
                )
            return None
        tag = step_folder(found)
        failure = ""
        if self.rank != 0:
            try:
                self.ckpts.download(found, self.ckpts.manifest(found), restore / tag)
            except Exception as e:  # noqa: BLE001 - reported on every rank below
                failure = f"rank {self.rank}: {e}"
        # Every rank must have its files before any enters load_checkpoint's collectives.
        failures = [""] * self.world
        dist.all_gather_object(failures, failure)
        if any(failures):
            raise CheckpointError(f"{self.ckpts.folder(found)}: download failed: {'; '.join(f for f in failures if f)}")
        path, client_state = engine.load_checkpoint(
            str(restore), tag=tag, load_module_strict=True, load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
        if path is None:
            raise CheckpointError(f"DeepSpeed could not load {restore / tag}")
        set_rng_state(torch.load(restore / tag / f"kiln_rank_{self.rank:05d}.pt", weights_only=False))
        self.last_committed = found
        return found, client_state

    def resume(self, engine: Any) -> dict[str, Any] | None:
        """Apply the run's resume policy; returns the client_state to continue from, or None."""
        mode = self.cfg.checkpoint.resume
        if mode == "never":
            if self.ckpts.committed_steps():
                raise CheckpointError(
                    f"checkpoint.resume: 'never' but {self.ckpts.prefix} already holds committed checkpoints; "
                    "use a new run name"
                )
            return None
        loaded = self.load_newest(engine)
        if loaded is None:
            if mode == "required":
                raise CheckpointError(f"checkpoint.resume: 'required' but {self.ckpts.prefix} has no committed checkpoint")
            return None
        step, client_state = loaded
        log.info("resumed from %s", self.ckpts.folder(step))
        return client_state
