"""The Triton model repository: `config.pbtxt` per model, one numbered folder per version.

    <repo>/<model>/config.pbtxt
    <repo>/<model>/<version>/model.py, weights.safetensors, model_config.json, tokenizer.model,
                             manifest.json   (written last, with a conditional put)

Writing a version only adds keys below `<model>/<version>/`; `config.pbtxt` is written only when the
model has none yet. The manifest's conditional put is the version's commit: two exports racing for
the same number cannot both win, and a version that already exists is refused before any upload.

Version policy `all`: Triton serves every version present, which the rollout needs (the current and
the candidate version side by side, addressed by number). The operator narrows it when loading
through the repository API (a config override with `specific { versions: [...] }`).
"""

from __future__ import annotations

import re
from pathlib import Path

from kiln_trainer.export.consolidate import ExportError
from kiln_trainer.storage import AlreadyExists, Store

MAX_BATCH = 8

CONFIG_TEMPLATE = """\
name: "{name}"
backend: "python"
# Requests are batched by Triton's dynamic batcher and generated together in one execute() call.
max_batch_size: {max_batch}
dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}
# Decoupled: a request may get one response per generated token (gRPC streaming).
model_transaction_policy {{ decoupled: true }}
version_policy: {{ all {{ }} }}
input [
  {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] optional: true }},
  {{ name: "INPUT_IDS" data_type: TYPE_INT64 dims: [ -1 ] optional: true allow_ragged_batch: true }},
  {{ name: "MAX_NEW_TOKENS" data_type: TYPE_INT32 dims: [ 1 ] optional: true }},
  {{ name: "TEMPERATURE" data_type: TYPE_FP32 dims: [ 1 ] optional: true }},
  {{ name: "TOP_K" data_type: TYPE_INT32 dims: [ 1 ] optional: true }},
  {{ name: "TOP_P" data_type: TYPE_FP32 dims: [ 1 ] optional: true }},
  {{ name: "SEED" data_type: TYPE_INT64 dims: [ 1 ] optional: true }},
  {{ name: "STREAM" data_type: TYPE_BOOL dims: [ 1 ] optional: true }},
  {{ name: "NO_REPEAT_NGRAM" data_type: TYPE_INT32 dims: [ 1 ] optional: true }},
  {{ name: "MIN_NEW_TOKENS" data_type: TYPE_INT32 dims: [ 1 ] optional: true }}
]
output [
  {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "TOKEN_IDS" data_type: TYPE_INT64 dims: [ -1 ] }}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""


def config_pbtxt(name: str, max_batch: int = MAX_BATCH, delay_us: int = 2000) -> str:
    return CONFIG_TEMPLATE.format(name=name, max_batch=max_batch, delay_us=delay_us)


def existing_versions(store: Store, model: str) -> list[int]:
    """Numbered version folders of `model` that hold any file."""
    found = set()
    for key in store.list(f"{model}/"):
        parts = key.split("/")
        if len(parts) >= 3 and re.fullmatch(r"[1-9][0-9]*", parts[1]):
            found.add(int(parts[1]))
    return sorted(found)


def pick_version(store: Store, model: str, requested: int | str) -> int:
    """`auto` → one above the highest present; a number → itself unless it exists already."""
    present = existing_versions(store, model)
    if requested == "auto":
        return (present[-1] + 1) if present else 1
    version = int(requested)
    if version in present:
        raise ExportError(f"version: {model}/{version} already exists in {store.root}; versions are never overwritten")
    return version


def write_version(
    store: Store, model: str, version: int, files: dict[str, Path], manifest_json: bytes
) -> str:
    """Upload `files` then the manifest (conditional put); returns the version's URI."""
    prefix = f"{model}/{version}"
    if store.exists(f"{prefix}/manifest.json"):
        raise ExportError(f"version: {store.uri(prefix)} already exists; versions are never overwritten")
    if not store.exists(f"{model}/config.pbtxt"):
        try:
            store.put_bytes(f"{model}/config.pbtxt", config_pbtxt(model).encode(), if_absent=True)
        except AlreadyExists:
            pass  # another export created it meanwhile: same content, keep theirs
    for i, (name, path) in enumerate(sorted(files.items()), 1):
        store.put_file(f"{prefix}/{name}", path)
        print(f"[export] uploaded {i}/{len(files)} {prefix}/{name}", flush=True)
    try:
        store.put_bytes(f"{prefix}/manifest.json", manifest_json, if_absent=True)
    except AlreadyExists as e:
        raise ExportError(f"version: {store.uri(prefix)} was written concurrently by another export") from e
    return store.uri(prefix)
