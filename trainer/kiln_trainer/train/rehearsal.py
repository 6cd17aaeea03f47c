"""GPU presets exactly as the operator compiles them, run where there is no GPU (or one GPU).

Both the CPU rehearsal (``tests/integration/test_preset_rehearsal.py``) and the GPU bench
(``bench/gpu_bench.py``) start from :func:`preset_spec` — what a user writes for a GPU preset: the
preset, the scale, a step budget — and :func:`kiln_api.compiler.compile_run`, the operator's own
compiler. Two changes to the compiled files are allowed, each one named function:

- :func:`relocate` moves *where* things are (the S3 storage root becomes a folder on this machine,
  the pod's local checkpoint dir a folder of the test); nothing about *what* runs changes.
- :func:`shrink_model` is the **test-only override**: the model's width, depth and sequence length
  become tiny so that a CPU can run the preset. Heads, KV heads, the FFN/width ratio, ZeRO stage,
  offload, activation checkpointing, precision, batch arithmetic (micro × accumulation × world),
  the schedule and the checkpoint layout stay as compiled. :func:`changed_paths` lists what differs,
  so a test can prove nothing else did.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from kiln_api.compiler import CompiledRun, RunIdentity, compile_run
from kiln_api.trainingrun import parse_spec

GPU_PRESETS = ("gpt_125m", "gpt_1b", "gpt_7b")
STORAGE_ROOT = "s3://kiln-rehearsal/runs"
"""The spec's storage URI; :func:`relocate` maps it (and everything below it) elsewhere."""
# The data step's bundled corpus, as examples/tiny.yaml prepares it (a real tokenizer, so export works).
_DATA = {
    "sources": [{"uri": "builtin://tinycorpus/*_stories.txt", "format": "txt"},
                {"uri": "builtin://tinycorpus/*_notes.jsonl*", "format": "jsonl"}],
    "tokenizer": {"vocabSize": 2000},
    "validationFraction": 0.02,
}
SHRUNK_PATHS = frozenset({"model.d_model", "model.n_layers", "model.ffn_hidden", "model.max_seq_len",
                          "batch.seq_len"})
"""The only train.yaml fields :func:`shrink_model` may change."""


def preset_spec_dict(preset: str, *, nodes: int, gpus_per_node: int, max_steps: int,
                     checkpoint_every: int | None = None, vocab_size: int | None = None) -> dict[str, Any]:
    """A TrainingRun spec for a GPU preset; everything not written here comes from the preset."""
    data = copy.deepcopy(_DATA)
    if vocab_size is not None:
        data["tokenizer"]["vocabSize"] = vocab_size
    training: dict[str, Any] = {
        "nodes": nodes, "gpusPerNode": gpus_per_node, "accelerator": "nvidia-h100-80gb", "maxSteps": max_steps,
        # The presets warm up for 5000 steps; a short budget needs a shorter warmup (a user-written field).
        "optimizer": {"warmupSteps": 1},
    }
    if checkpoint_every is not None:
        training["checkpoint"] = {"intervalSteps": checkpoint_every}
    return {"storage": {"uri": STORAGE_ROOT}, "data": data, "model": {"preset": preset}, "training": training}


def compile_preset(preset: str, *, name: str, namespace: str = "rehearsal", **shape: Any) -> CompiledRun:
    """The preset compiled as the operator would for a run ``namespace/name`` (see :func:`preset_spec_dict`)."""
    return compile_run(parse_spec(preset_spec_dict(preset, **shape)), RunIdentity(name=name, namespace=namespace))


def relocate(raw: dict[str, Any], root: str, **paths: Any) -> dict[str, Any]:
    """A copy of a compiled file with STORAGE_ROOT replaced by ``root`` in every string, then the
    dotted ``paths`` (e.g. ``checkpoint__local_dir``: double underscore for the dot) set."""
    def move(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(STORAGE_ROOT):
            return root + value[len(STORAGE_ROOT):]
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        return value

    out: dict[str, Any] = move(raw)
    for dotted, value in paths.items():
        *head, last = dotted.split("__")
        node = out
        for key in head:
            node = node[key]
        node[last] = value
    return out


def shrink_model(train: dict[str, Any], *, head_dim: int = 4, depth: int = 2, seq_len: int = 32) -> dict[str, Any]:
    """TEST ONLY: a copy of a compiled train.yaml whose model is ``head_dim`` wide per head, ``depth``
    layers deep and sees ``seq_len`` tokens; the head counts and the FFN/width ratio are kept."""
    out = copy.deepcopy(train)
    m = out["model"]
    width = m["n_heads"] * head_dim
    if m.get("ffn_hidden"):
        m["ffn_hidden"] = max(8, math.ceil(m["ffn_hidden"] * width / m["d_model"]))
    m.update(d_model=width, n_layers=depth, max_seq_len=seq_len)
    out["batch"]["seq_len"] = seq_len
    return out


def changed_paths(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths whose values differ between two nested mappings."""
    out: set[str] = set()
    for key in set(a) | set(b):
        path = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out |= changed_paths(va, vb, path + ".")
        elif va != vb:
            out.add(path)
    return out
