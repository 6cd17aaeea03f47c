"""`kiln-trainer prepare`: turn a data spec into a content-addressed dataset in S3 or a local folder.

Three ways to run it (see ``cli.py``):

- single process: ``prepare --config FILE`` = shard 0 of 1, then merge, in one process;
- scale-out, step 1: ``prepare --config FILE --num-shards N [--shard-index I]`` (I defaults to
  ``$JOB_COMPLETION_INDEX`` in a Kubernetes Indexed Job) writes ``<dataset>/parts/part-0000I/``;
- scale-out, step 2: ``prepare --config FILE --merge`` dedups globally, trains the tokenizer, packs.

The dataset lives at ``<output>/datasets/<data-hash>/`` where data-hash is ``DataSpec.spec_hash()``, so
the operator can compute it without running anything. When its ``manifest.json`` exists, every mode
says so and does nothing. The output contract is documented in ``manifest.py``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kiln_api.data_config import DataSpecError, PrepareConfig
from kiln_api.s3layout import StorageURI

from kiln_trainer.data.manifest import MANIFEST, REPORT, TOKENIZER, build_manifest
from kiln_trainer.data.merge import merge_parts
from kiln_trainer.data.parts import build_part
from kiln_trainer.data.report import Report
from kiln_trainer.data.sources import InputFile, list_inputs
from kiln_trainer.storage import AlreadyExists, Store, StoreError, open_store

PART_FILES = ("docs.jsonl.zst", "index.npz", "report.json", "done.json")


def load_config(path: str | Path) -> PrepareConfig:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataSpecError(f"config: cannot read {p}: {e.strerror or e}") from e
    return PrepareConfig.from_dict(raw, base_dir=str(p.resolve().parent))


def dataset_uri(cfg: PrepareConfig) -> str:
    return StorageURI.parse(cfg.output, field="output").join("datasets", cfg.data.spec_hash())


def _open_output(cfg: PrepareConfig) -> Store:
    store = open_store(dataset_uri(cfg))
    try:
        if not store.exists(MANIFEST):
            # fail before hours of work, not at the upload: a write probe catches missing buckets,
            # wrong credentials and read-only access alike
            store.put_bytes(".write-probe", b"")
            store.delete(".write-probe")
    except StoreError as e:
        raise DataSpecError(f"output: cannot access {cfg.output}: {e}") from e
    return store


def _say(msg: str) -> None:
    print(f"[prepare] {msg}", file=sys.stderr, flush=True)


def _workers(cfg: PrepareConfig) -> int:
    return cfg.workers or os.cpu_count() or 1


def part_name(index: int) -> str:
    return f"parts/part-{index:05d}"


def run_shard(cfg: PrepareConfig, store: Store, index: int, num_shards: int) -> Report:
    """Step 1 of scale-out: this shard's slice of the files → `<dataset>/parts/part-I/`."""
    if not 0 <= index < num_shards:
        raise DataSpecError(f"shard-index: must be in [0, {num_shards}), got {index}")
    inputs = list_inputs(cfg.data.sources, cfg.base_dir)
    mine: list[InputFile] = [f for f in inputs if f.index % num_shards == index]
    _say(f"shard {index}/{num_shards}: {len(mine)} of {len(inputs)} files")
    store.delete(f"{part_name(index)}/done.json")  # a restarted shard is unfinished until it ends again
    with tempfile.TemporaryDirectory(prefix="kiln-part-") as tmp:
        rep = build_part(mine, cfg.data, _workers(cfg), Path(tmp), index, num_shards)
        for name in PART_FILES:  # done.json last: a part without it is incomplete
            store.put_file(f"{part_name(index)}/{name}", Path(tmp) / name)
    return rep


def _fetch_parts(store: Store, num_shards: int | None, dest: Path) -> list[Path]:
    done = sorted(k for k in store.list("parts/") if k.endswith("/done.json"))
    if not done:
        raise DataSpecError("merge: no finished parts under parts/ (run the shards first)")
    n = num_shards or json.loads(store.get_bytes(done[0]))["num_shards"]
    missing = [part_name(i) for i in range(n) if f"{part_name(i)}/done.json" not in done]
    if missing:
        raise DataSpecError(f"merge: parts not finished: {', '.join(missing)} (expected {n} shards)")
    out = []
    for i in range(n):
        local = dest / f"part-{i:05d}"
        for name in PART_FILES:
            store.get_file(f"{part_name(i)}/{name}", local / name)
        written_for = json.loads((local / "done.json").read_text())["num_shards"]
        if written_for != n:
            raise DataSpecError(f"merge: {part_name(i)} was written by a run with {written_for} shards, "
                                f"this merge expects {n}; rerun the shards")
        out.append(local)
    return out


def _publish(cfg: PrepareConfig, store: Store, merged: Any, rep: Report, inputs: list[InputFile]) -> dict[str, Any]:
    store.put_file(TOKENIZER, merged.tokenizer_path)
    for key, path in merged.files.items():
        store.put_file(key, path)
    tok = merged.tokenizer
    manifest = build_manifest(cfg.data.spec_hash(), cfg.data.spec_hash(), {
        "vocab_size": tok.vocab_size, "sha256": tok.sha256, "bos_id": tok.bos_id, "eos_id": tok.eos_id,
        "pad_id": tok.pad_id, "unk_id": tok.unk_id, "mask_id": tok.mask_id,
    }, merged.shards)
    manifest["inputs"] = [f.uri for f in inputs]
    manifest["spec"] = json.loads(cfg.data.canonical_json())
    store.put_bytes(REPORT, json.dumps(rep.to_dict(), indent=1, ensure_ascii=False).encode())
    try:
        store.put_bytes(MANIFEST, json.dumps(manifest, indent=1).encode(), if_absent=True)
    except AlreadyExists:
        _say("another process published this dataset first; keeping theirs")
    return manifest


def run_merge(cfg: PrepareConfig, store: Store, parts: list[Path], rep: Report, work: Path) -> dict[str, Any]:
    """Step 2: global dedup, tokenizer, packing, manifest."""
    for p in parts:
        rep.merge(Report.from_dict(json.loads((p / "report.json").read_text())))
        rep.extra.setdefault("skipped_files", []).extend(
            json.loads((p / "report.json").read_text()).get("skipped_files", []))
    if rep.get("input", "docs_read") == 0:
        raise DataSpecError(f"data.sources: no documents could be read ({json.dumps(rep.counts)})")
    merged = merge_parts(parts, cfg.data, _workers(cfg), work, rep)
    return _publish(cfg, store, merged, rep, list_inputs(cfg.data.sources, cfg.base_dir))


def _shard_index(given: int | None, num_shards: int | None) -> int:
    """--shard-index, else $JOB_COMPLETION_INDEX (set by a Kubernetes Indexed Job)."""
    if num_shards is None:
        raise DataSpecError("num-shards: required with --shard-index")
    if given is not None:
        return given
    env = os.environ.get("JOB_COMPLETION_INDEX", "")
    if not env.isdigit():
        raise DataSpecError(f"shard-index: not given and JOB_COMPLETION_INDEX is not an integer ({env!r})")
    return int(env)


def _check_inputs_unchanged(cfg: PrepareConfig, store: Store) -> None:
    """The hash covers the spec, not the bytes: warn when the same spec now lists other files."""
    try:
        recorded = json.loads(store.get_bytes(MANIFEST)).get("inputs", [])
        now = [f.uri for f in list_inputs(cfg.data.sources, cfg.base_dir)]
    except (StoreError, DataSpecError) as e:
        _say(f"warning: could not compare the inputs with the prepared dataset's ({e})")
        return
    if recorded != now:
        _say(f"warning: the inputs changed since this dataset was prepared ({len(recorded)} files then, "
             f"{len(now)} now); change the spec (e.g. sample_seed) to prepare them again")


def main(config_path: str, shard_index: int | None = None, num_shards: int | None = None, merge: bool = False) -> int:
    cfg = load_config(config_path)
    _say("data spec: " + cfg.data.canonical_json())
    store = _open_output(cfg)
    where = dataset_uri(cfg)
    if store.exists(MANIFEST):
        _say(f"dataset {cfg.data.spec_hash()} already prepared at {where}; reusing it")
        _check_inputs_unchanged(cfg, store)
        print(where)
        return 0
    start = time.perf_counter()
    rep = Report()
    with tempfile.TemporaryDirectory(prefix="kiln-prepare-") as tmp:
        work = Path(tmp)
        if merge:
            parts = _fetch_parts(store, num_shards, work / "parts")
            run_merge(cfg, store, parts, rep, work)
            for key in store.list("parts/"):
                store.delete(key)
        elif num_shards is not None or shard_index is not None:
            index = _shard_index(shard_index, num_shards)
            run_shard(cfg, store, index, num_shards or 0)
            _say(f"part {index} of {num_shards} written under {where}/parts/")
            return 0
        else:
            inputs = list_inputs(cfg.data.sources, cfg.base_dir)
            part = work / "parts" / "part-00000"
            build_part(inputs, cfg.data, _workers(cfg), part, 0, 1)
            run_merge(cfg, store, [part], rep, work)
    _say(f"dataset ready at {where} in {time.perf_counter() - start:.1f}s")
    print(where)
    return 0
