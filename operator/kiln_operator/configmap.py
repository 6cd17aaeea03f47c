"""The per-run ConfigMap ``<run>-config``: prepare.yaml, train.yaml and export.yaml.

Its contents come from ``kiln_api.compiler.compile_run`` and nothing else: the operator never builds a
step config itself. A spec the steps would refuse fails in the compiler, with the spec field named,
instead of in a crash-looping pod.

The annotation ``kiln.dev/training-hash`` fingerprints everything a running training gang depends on
(train.yaml and the pod-level fields of the spec): when an applied spec edit changes it, the operator
restarts the gang from the last committed checkpoint (``phases.apply_spec_change``).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

from kiln_api.compiler import CompiledRun, RunIdentity, compile_run
from kiln_api.specfields import to_dict

from kiln_operator.builders.common import Run, child_name, metadata

STAGE = "config"
TRAINING_HASH = "kiln.dev/training-hash"


_COMPILED: OrderedDict[int, tuple[Run, CompiledRun]] = OrderedDict()
_COMPILED_MAX = 64
_compiled_lock = threading.Lock()


def compiled(run: Run) -> CompiledRun:
    """The run's compiled configs (raises SpecError naming the spec field).

    A reconcile asks for them up to three times on the same Run object, and compiling (YAML emitting
    above all) is most of a new run's CPU time; so the last few are kept, keyed by the object itself
    (the entry holds it, so its id cannot be reused while cached). A new reconcile parses a new Run."""
    with _compiled_lock:
        hit = _COMPILED.get(id(run))
        if hit is not None and hit[0] is run:
            return hit[1]
    out = compile_run(run.spec, RunIdentity(name=run.name, namespace=run.namespace))
    with _compiled_lock:
        _COMPILED[id(run)] = (run, out)
        while len(_COMPILED) > _COMPILED_MAX:
            _COMPILED.popitem(last=False)
    return out


def dataset_uri(run: Run) -> str:
    """Where the prepared dataset lands: content-addressed by the data spec's hash."""
    return compiled(run).dataset_uri


def training_hash(run: Run, files: dict[str, str]) -> str:
    """Fingerprint of what the training pods see: train.yaml plus image, resources, scheduling, storage."""
    s = run.spec
    pod_fields = {"image": s.image, "resources": to_dict(s.training.resources), "spot": s.training.spot,
                  "storage": to_dict(s.storage)}
    blob = json.dumps({"train": files["train.yaml"], "pod": pod_fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_config_map(run: Run) -> dict[str, Any]:
    """``<run>-config`` with one file per step, mounted at /etc/kiln in every trainer pod."""
    files = compiled(run).files()
    meta = metadata(run, child_name(run, STAGE), STAGE)
    meta["annotations"] = {TRAINING_HASH: training_hash(run, files)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": files}
