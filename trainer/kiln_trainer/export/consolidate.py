"""Pick a committed checkpoint, verify it against its manifest, and consolidate it into one state dict.

Checkpoint layout (written by the trainer, issue 4):

    <checkpoints>/step-XXXXXXXX/manifest.json   {"step": N, "files": {...}, "val_loss"|"metrics": ...}
    <checkpoints>/step-XXXXXXXX/<commit marker>  written last with a conditional put
    <checkpoints>/step-XXXXXXXX/...              DeepSpeed files, model_config.json, tokenizer.model
    <checkpoints>/latest                         names the newest committed step folder

The manifest's "files" may be {path: sha256}, {path: {"sha256": ...}} or [{"path", "sha256"}]. A
checkpoint without a commit marker, with a file missing or with a checksum mismatch is refused with
an error naming the file: exporting a half-written checkpoint would serve garbage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kiln_trainer.storage import NotFound, Store
from kiln_trainer.train.consolidate_parallel import parallel_state_dict

COMMIT_MARKERS = ("COMMITTED", "_COMMITTED", "commit", "COMMIT", "_SUCCESS", "commit.json")
"""File names accepted as the commit marker of a step folder."""


class ExportError(RuntimeError):
    """Export cannot proceed; the message says which input is wrong."""


@dataclass(frozen=True)
class CheckpointRef:
    """One committed checkpoint folder and its parsed manifest."""

    folder: str
    step: int
    manifest: dict[str, Any]

    @property
    def val_loss(self) -> float | None:
        m = self.manifest
        value = m.get("val_loss", (m.get("metrics") or {}).get("val_loss"))
        return None if value is None else float(value)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_files(manifest: dict[str, Any], where: str) -> dict[str, str]:
    """{relative path: sha256} from the accepted manifest shapes."""
    files = manifest.get("files")
    out: dict[str, str] = {}
    if isinstance(files, dict):
        for path, v in files.items():
            out[str(path)] = str(v["sha256"] if isinstance(v, dict) else v)
    elif isinstance(files, list):
        for entry in files:
            path = entry.get("path") or entry.get("key") or entry.get("name")
            out[str(path)] = str(entry["sha256"])
    if not out:
        raise ExportError(f"{where}: manifest.json lists no files (expected 'files' with sha256 per file)")
    return out


def _check_marker(store: Store, folder: str, marker: str, manifest: dict[str, Any]) -> None:
    """The trainer's COMMITTED names the sha256 of the manifest it committed: a replaced manifest fails."""
    try:
        body = json.loads(store.get_bytes(f"{folder}/{marker}") or b"{}")
    except json.JSONDecodeError:
        return  # an empty/plain marker carries no digest to check
    want = body.get("manifest_sha256") if isinstance(body, dict) else None
    if want and hashlib.sha256(store.get_bytes(f"{folder}/manifest.json")).hexdigest() != want:
        raise ExportError(f"checkpoint {store.uri(folder)}: manifest.json does not match the sha256 in {marker}")


def _load_ref(store: Store, folder: str) -> CheckpointRef:
    try:
        manifest = json.loads(store.get_bytes(f"{folder}/manifest.json"))
    except NotFound as e:
        raise ExportError(f"checkpoint {store.uri(folder)} has no manifest.json (partial checkpoint)") from e
    except json.JSONDecodeError as e:
        raise ExportError(f"checkpoint {store.uri(folder)}: manifest.json is not valid JSON ({e})") from e
    marker = next((m for m in COMMIT_MARKERS if store.exists(f"{folder}/{m}")), None)
    if marker is None:
        raise ExportError(f"checkpoint {store.uri(folder)} has no commit marker: it was never committed")
    _check_marker(store, folder, marker, manifest)
    step = manifest.get("step")
    if not isinstance(step, int):
        try:
            step = int(folder.rsplit("-", 1)[-1])
        except ValueError as e:
            raise ExportError(f"checkpoint {store.uri(folder)}: cannot tell its step") from e
    return CheckpointRef(folder=folder, step=step, manifest=manifest)


def committed_folders(store: Store) -> list[str]:
    """Step folders under the checkpoints root that hold a manifest (sorted by step)."""
    folders = {k.split("/", 1)[0] for k in store.list() if k.startswith("step-") and k.endswith("/manifest.json")}
    return sorted(folders)


def resolve_checkpoint(store: Store, choice: str) -> CheckpointRef:
    """`latest`: the folder named by the `latest` pointer. `best`: lowest val_loss among committed ones."""
    if choice == "latest":
        try:
            pointer = store.get_bytes("latest").decode().strip()
        except NotFound as e:
            raise ExportError(f"checkpoint: no 'latest' pointer at {store.uri('latest')}: no committed checkpoint") from e
        folder = pointer.rstrip("/").rsplit("/", 1)[-1]
        return _load_ref(store, folder)
    if choice == "best":
        refs = []
        for folder in committed_folders(store):
            try:
                refs.append(_load_ref(store, folder))
            except ExportError:
                continue  # an uncommitted folder is simply not a candidate
        scored = [r for r in refs if r.val_loss is not None]
        if not scored:
            raise ExportError(f"checkpoint: 'best' needs val_loss in the manifests of {store.root}; none has one")
        return min(scored, key=lambda r: (r.val_loss, -r.step))
    raise ExportError(f"checkpoint: {choice!r} must be 'latest' or 'best'")


def download_verified(store: Store, ref: CheckpointRef, dest: Path) -> Path:
    """Download every manifest-listed file of `ref` into `dest` and check its sha256."""
    where = store.uri(ref.folder)
    files = manifest_files(ref.manifest, where)
    for i, (rel, digest) in enumerate(sorted(files.items()), 1):
        if ".." in Path(rel).parts or rel.startswith("/"):
            raise ExportError(f"{where}: manifest path {rel!r} escapes the checkpoint folder")
        local = dest / rel
        try:
            store.get_file(f"{ref.folder}/{rel}", local)
        except NotFound as e:
            raise ExportError(f"{where}: file {rel!r} listed in manifest.json is missing (partial checkpoint)") from e
        actual = sha256_file(local)
        if actual != digest:
            raise ExportError(f"{where}: file {rel!r} is corrupt: sha256 {actual[:12]}… != manifest {digest[:12]}…")
        print(f"[export] verified {i}/{len(files)} {rel}", flush=True)
    return dest


def find_one(root: Path, name: str) -> Path | None:
    """The shallowest file called `name` below root, if any."""
    hits = sorted(root.rglob(name), key=lambda p: (len(p.parts), str(p)))
    return hits[0] if hits else None


def consolidate(local: Path) -> dict[str, torch.Tensor]:
    """fp32 weights from a downloaded DeepSpeed checkpoint (ZeRO shards merged when present)."""
    # ZeRO-1/2 (and no ZeRO) write mp_rank_00_model_states.pt; ZeRO-3 writes one
    # zero_pp_rank_<r>_mp_rank_00_model_states.pt per rank instead.
    found = sorted(local.rglob("*mp_rank_00_model_states.pt"), key=lambda p: (len(p.parts), p.name))
    if not found:
        raise ExportError(f"{local}: no DeepSpeed model states (*mp_rank_00_model_states.pt) in the checkpoint")
    states = found[0]
    tag_dir = states.parent
    parallel = parallel_state_dict(tag_dir)  # pipeline / tensor-parallel files back into GPT's names
    if parallel is not None:
        return parallel
    if any(tag_dir.glob("*zero_pp_rank_*_optim_states.pt")) or any(tag_dir.glob("zero_pp_rank_*_model_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        # ZeRO keeps the fp32 master weights partitioned across the optimizer shards.
        sd = get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name)
    else:
        # No ZeRO partitioning: the module state in the model file is complete.
        blob = torch.load(states, map_location="cpu", weights_only=False)
        sd = blob["module"]
    return {k.removeprefix("module."): v.detach().float().contiguous() for k, v in sd.items()}
