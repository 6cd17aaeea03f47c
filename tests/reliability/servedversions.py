"""Serving helpers of the reliability suite: a load that counts answers by the version that gave them,
and bad versions made from good exports (the ways a version goes wrong after export)."""

from __future__ import annotations

import collections
import hashlib
import json
import queue
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln_api.triton_client import GenerateRequest, _inputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from kilnflow import Load  # noqa: E402


def answered_by(url: str, model: str, prompt: str, timeout_s: float = 60.0) -> int:
    """One greedy request through the Service; returns the model version that answered it (Triton puts
    the version in every response), raising on an error or an empty answer."""
    import tritonclient.grpc as grpcclient

    responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    try:
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        client.async_stream_infer(model, _inputs(GenerateRequest(prompt=prompt, max_new_tokens=4)),
                                  enable_empty_final_response=True)
        versions, tokens = set(), 0
        while True:
            result, error = responses.get(timeout=timeout_s)
            if error is not None:
                raise RuntimeError(str(error)[:200])
            resp = result.get_response()
            if resp.model_version:
                versions.add(int(resp.model_version))
            ids = result.as_numpy("TOKEN_IDS")
            tokens += 0 if ids is None else ids.size
            final = resp.parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                break
        if len(versions) != 1 or not tokens:
            raise RuntimeError(f"answer from versions {sorted(versions)} with {tokens} tokens")
        return versions.pop()
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()


@dataclass
class VersionLoad(Load):
    """Clients sending requests through the target's Service until stopped (tests/e2e's Load);
    `by_version` counts the answers per model version, `failures` every request that got none."""

    prompt: str = "the cat sees"
    by_version: collections.Counter[int] = field(default_factory=collections.Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _worker(self) -> None:
        while not self._stop.is_set():
            try:
                version = answered_by(self.url, self.model, self.prompt)
                with self._lock:
                    self.by_version[version] += 1
            except Exception as e:  # noqa: BLE001 - every failed request is counted and shown
                with self._lock:
                    self.failures.append(f"{type(e).__name__}: {str(e)[:200]}")

    def total(self) -> int:
        with self._lock:
            return sum(self.by_version.values())


# Appended to a version's model.py: the version loads and reports ready, then its stub process dies on
# the first request (a version whose code crashes under traffic).
CRASH_ON_FIRST_REQUEST = """

def _crash_on_request(self, requests):
    import os
    os._exit(3)


TritonPythonModel.execute = _crash_on_request
"""


def perturbed_weights(data: bytes) -> bytes:
    """The same tensors, each multiplied by -1: it loads (shapes and names match) but answers differently."""
    from safetensors.torch import load, save

    return save({k: (-v.float()).to(v.dtype).contiguous() for k, v in load(data).items()})


def rewrite_version(s3: Any, bucket: str, prefix: str, how: str) -> None:
    """Make the exported version at s3://bucket/prefix bad in one way:
    `corrupt`: weights that fail the manifest's sha256, so the version never loads (never ready);
    `wrong`: other weights with a matching sha256, so it loads but answers unlike its reference;
    `crash`: good weights, model code that kills its process on the first request."""
    def get(key: str) -> bytes:
        return bytes(s3.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read())

    def put(key: str, body: bytes) -> None:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body)

    if how == "corrupt":
        weights = bytearray(get("weights.safetensors"))
        weights[len(weights) // 2: len(weights) // 2 + 64] = b"\x7f" * 64
        put("weights.safetensors", bytes(weights))
    elif how == "wrong":
        weights = perturbed_weights(get("weights.safetensors"))
        manifest = json.loads(get("manifest.json"))
        manifest["weights_sha256"] = hashlib.sha256(weights).hexdigest()
        put("weights.safetensors", weights)
        put("manifest.json", json.dumps(manifest).encode())
    elif how == "crash":
        put("model.py", get("model.py") + CRASH_ON_FIRST_REQUEST.encode())
    else:
        raise ValueError(f"how: {how!r} must be corrupt, wrong or crash")
