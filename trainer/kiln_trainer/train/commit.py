"""The checkpoint commit protocol on object storage (no torch, no DeepSpeed: testable alone).

Layout of one run (keys below the storage root, see kiln_api.s3layout):

    runs/<run>/checkpoints/step-00000100/
        mp_rank_00_model_states.pt, *zero_pp_rank_*_optim_states.pt, ...   DeepSpeed's files
        kiln_rank_00000.pt ...        per-rank RNG states
        model_config.json             the ModelConfig the weights belong to
        parts/rank-00000.json         what each rank uploaded (name, sha256, size) + attempt id
        manifest.json                 all files with sha256 and size, step, metrics, config hash
        COMMITTED                     written last with a conditional put; names the manifest's sha256
    runs/<run>/checkpoints/latest     the newest committed folder name (for people and export)

Order of writes: every rank uploads its files, then its part; rank 0 waits for all parts of the
same attempt, writes manifest.json, then COMMITTED (If-None-Match: *), then `latest`. A folder
without COMMITTED, or whose files do not match the manifest, is never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln_api.s3layout import step_folder

from kiln_trainer.data.manifest import sha256_file
from kiln_trainer.storage import AlreadyExists, NotFound, Store, StoreError

log = logging.getLogger("kiln.train.checkpoint")

MANIFEST = "manifest.json"
COMMIT = "COMMITTED"
LATEST = "latest"
MODEL_CONFIG = "model_config.json"
LARGE_FILE = 16 * 2**20  # at or above: uploaded alone, as a multipart upload (the store's threshold)
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or loaded; the message names the folder."""


@dataclass
class RunCheckpoints:
    """The committed checkpoints of one run in `store` under `prefix` (runs/<run>/checkpoints)."""

    store: Store
    prefix: str
    concurrency: int = 8

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def folder(self, step: int) -> str:
        return self._key(step_folder(step))

    # --- writing -------------------------------------------------------------------------------

    def upload_part(self, step: int, rank: int, attempt: str, files: Iterable[Path]) -> dict[str, Any]:
        """Upload this rank's files, then its part record (the last thing it writes).

        Large files go one after another, each already a parallel multipart upload; small files go
        in parallel beside them; sha256 is computed alongside. Running several multipart uploads at
        once only adds contention (measured in bench/bench_trainer.py)."""
        folder = self.folder(step)
        paths = sorted(files)
        sizes = {p: p.stat().st_size for p in paths}
        big = [p for p in paths if sizes[p] >= LARGE_FILE]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            digests = {p: pool.submit(sha256_file, p) for p in paths}
            small = [pool.submit(self.store.put_file, f"{folder}/{p.name}", p) for p in paths if p not in big]
            for p in big:
                self.store.put_file(f"{folder}/{p.name}", p)
            for fut in small:
                fut.result()
            entries = [{"name": p.name, "sha256": digests[p].result(), "size": sizes[p]} for p in paths]
        part = {"rank": rank, "attempt": attempt, "files": entries}
        self.store.put_bytes(f"{folder}/parts/rank-{rank:05d}.json", json.dumps(part).encode())
        return part

    def wait_parts(self, step: int, world: int, attempt: str, timeout: float) -> list[dict[str, Any]]:
        """All ranks' part records of this attempt, polling with backoff until `timeout` seconds."""
        deadline, delay = time.monotonic() + timeout, 0.02
        folder = self.folder(step)
        parts: dict[int, dict[str, Any]] = {}
        while True:
            for rank in range(world):
                if rank in parts:
                    continue
                try:
                    part = json.loads(self.store.get_bytes(f"{folder}/parts/rank-{rank:05d}.json"))
                except NotFound:
                    continue
                if part.get("attempt") == attempt:  # a part left by a crashed earlier attempt is ignored
                    parts[rank] = part
            if len(parts) == world:
                return [parts[r] for r in range(world)]
            if time.monotonic() > deadline:
                missing = sorted(set(range(world)) - set(parts))
                raise CheckpointError(f"{folder}: ranks {missing} did not finish uploading within {timeout:.0f}s")
            time.sleep(delay)
            delay = min(1.0, delay * 2)

    def commit(self, step: int, parts: list[dict[str, Any]], meta: dict[str, Any]) -> str:
        """Write manifest, then the commit marker (conditional), then `latest`. Returns the manifest sha."""
        folder = self.folder(step)
        files: dict[str, dict[str, Any]] = {}
        for part in parts:
            for entry in part["files"]:
                files[entry["name"]] = {"sha256": entry["sha256"], "size": entry["size"]}
        manifest = {"step": step, "world_size": len(parts), "files": files, **meta}
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        digest = hashlib.sha256(body).hexdigest()
        self.store.put_bytes(f"{folder}/{MANIFEST}", body)
        marker = json.dumps({"step": step, "manifest_sha256": digest, "committed_at": time.time()}).encode()
        try:
            self.store.put_bytes(f"{folder}/{COMMIT}", marker, if_absent=True)
        except AlreadyExists as e:
            raise CheckpointError(f"{folder}: already committed by another writer; refusing to overwrite") from e
        self.store.put_bytes(self._key(LATEST), step_folder(step).encode())
        return digest

    def uncommit(self, step: int) -> None:
        """Remove a committed step before re-saving it (marker first, so it is never half-valid)."""
        folder = self.folder(step)
        self.store.delete(f"{folder}/{COMMIT}")
        for key in self.store.list(folder + "/"):
            self.store.delete(key)

    def prune(self, keep_last: int) -> list[int]:
        """Delete all but the newest `keep_last` committed steps, and uncommitted leftovers older
        than the newest commit. Markers go first. Returns the deleted steps."""
        committed = self.committed_steps()
        keep = set(committed[-keep_last:])
        newest = committed[-1] if committed else -1
        doomed = [s for s in self.all_steps() if s not in keep and s < newest]
        for step in doomed:
            self.uncommit(step)
        return doomed

    # --- reading -------------------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        steps = set()
        below = self._key("")
        for key in self.store.list(below):
            rel = key[len(below) :] if below and key.startswith(below) else key
            m = _STEP_DIR.match(rel.split("/", 1)[0])
            if m:
                steps.add(int(m.group(1)))
        return sorted(steps)

    def committed_steps(self) -> list[int]:
        keys = set(self.store.list(self._key("")))
        return [s for s in self.all_steps() if f"{self.folder(s)}/{COMMIT}" in keys]

    def manifest(self, step: int) -> dict[str, Any]:
        """The manifest of a committed step, checked against the sha256 in its commit marker."""
        folder = self.folder(step)
        marker = json.loads(self.store.get_bytes(f"{folder}/{COMMIT}"))
        body = self.store.get_bytes(f"{folder}/{MANIFEST}")
        if hashlib.sha256(body).hexdigest() != marker.get("manifest_sha256"):
            raise CheckpointError(f"{folder}/{MANIFEST} does not match the sha256 in its {COMMIT} marker")
        result: dict[str, Any] = json.loads(body)
        return result

    def download(self, step: int, manifest: dict[str, Any], dest: Path) -> None:
        """Fetch every file of the manifest into dest/, verifying size and sha256 of each."""
        folder = self.folder(step)
        dest.mkdir(parents=True, exist_ok=True)

        def one(item: tuple[str, dict[str, Any]]) -> None:
            name, meta = item
            target = dest / name
            if not (target.is_file() and target.stat().st_size == meta["size"] and sha256_file(target) == meta["sha256"]):
                self.store.get_file(f"{folder}/{name}", target)
                if sha256_file(target) != meta["sha256"]:
                    raise CheckpointError(f"{folder}/{name}: sha256 does not match the manifest (corrupt file)")

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            list(pool.map(one, sorted(manifest["files"].items())))

    def fetch_newest_valid(
        self, dest_for: Callable[[int], Path], accept: Callable[[dict[str, Any]], None] | None = None
    ) -> tuple[int, dict[str, Any]] | None:
        """Download the newest committed checkpoint whose files all verify; older ones are tried when
        a newer one is corrupt or partial (with a warning). `accept` may raise to reject a manifest
        outright (e.g. an incompatible config): that error propagates. None if nothing is committed."""
        for step in reversed(self.committed_steps()):
            try:
                manifest = self.manifest(step)
                if accept is not None:
                    accept(manifest)
                self.download(step, manifest, dest_for(step))
                return step, manifest
            except (CheckpointError, StoreError, ValueError, KeyError) as e:
                if isinstance(e, IncompatibleCheckpoint):
                    raise
                log.warning("skipping checkpoint %s: %s", self.folder(step), e)
        return None


class IncompatibleCheckpoint(CheckpointError):
    """The checkpoint was written under a config this run cannot continue from."""
