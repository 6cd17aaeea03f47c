"""Client side of the served-model contract: kiln's Triton model inputs and outputs.

The export step writes models whose config declares these tensors (see
`kiln_trainer.export.repository`); the gate, the CLI and the benches talk to them through this one
module. The model is decoupled, so requests go over gRPC streams: with `stream=True` each generated
token arrives as its own response, otherwise one response carries the whole continuation.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class TritonRequestError(RuntimeError):
    """Triton answered with an error (bad input, model not ready, ...) or the stream broke."""


@dataclass(frozen=True)
class GenerateRequest:
    """One generation request; fields map to the model's optional inputs."""

    prompt: str
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stream: bool = False
    no_repeat_ngram: int = 0
    """0: plain decoding; n >= 2: the served model never repeats an n-gram (versions exported with it)."""
    min_new_tokens: int = 0
    """0: EOS may come first; n: the served model cannot stop before n new tokens (versions exported with it)."""


@dataclass
class GenerateResult:
    """What came back: the text, the token ids, and the time to the first and last response."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    first_response_s: float = 0.0
    total_s: float = 0.0


def _inputs(req: GenerateRequest) -> list[Any]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    def tensor(name: str, value: Any, dtype: str, np_dtype: Any) -> Any:
        t = grpcclient.InferInput(name, [1, 1], dtype)
        t.set_data_from_numpy(np.array([[value]], dtype=np_dtype))
        return t

    out = [
        tensor("TEXT", req.prompt.encode("utf-8"), "BYTES", np.object_),
        tensor("MAX_NEW_TOKENS", req.max_new_tokens, "INT32", np.int32),
        tensor("TEMPERATURE", req.temperature, "FP32", np.float32),
        tensor("TOP_K", req.top_k, "INT32", np.int32),
        tensor("TOP_P", req.top_p, "FP32", np.float32),
        tensor("STREAM", req.stream, "BOOL", np.bool_),
    ]
    if req.seed is not None:
        out.append(tensor("SEED", req.seed, "INT64", np.int64))
    if req.no_repeat_ngram:  # only when asked: versions exported before the input existed reject it
        out.append(tensor("NO_REPEAT_NGRAM", req.no_repeat_ngram, "INT32", np.int32))
    if req.min_new_tokens:  # the same: sent only when asked
        out.append(tensor("MIN_NEW_TOKENS", req.min_new_tokens, "INT32", np.int32))
    return out


def stream_generate(
    url: str, model: str, req: GenerateRequest, version: int | None = None, timeout_s: float = 120.0
) -> Iterator[tuple[str, list[int]]]:
    """Yield (text piece, token ids) per response from the model at `url` (gRPC host:port)."""
    import tritonclient.grpc as grpcclient

    responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    try:
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        client.async_stream_infer(
            model, _inputs(req), model_version="" if version is None else str(version),
            enable_empty_final_response=True,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                result, error = responses.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty as e:
                raise TritonRequestError(f"{model} at {url}: no response within {timeout_s:.0f}s") from e
            if error is not None:
                raise TritonRequestError(f"{model} at {url}: {error}")
            resp = result.get_response()
            final = resp.parameters.get("triton_final_response")
            if result.as_numpy("TEXT") is not None:
                text = result.as_numpy("TEXT").reshape(-1)[0]
                ids = result.as_numpy("TOKEN_IDS")
                yield (
                    text.decode("utf-8") if isinstance(text, bytes) else str(text),
                    [] if ids is None else [int(i) for i in ids.reshape(-1)],
                )
            if final is not None and final.bool_param:
                return
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()


def generate(url: str, model: str, req: GenerateRequest, version: int | None = None,
             timeout_s: float = 120.0) -> GenerateResult:
    """Run one request to completion and collect the text and token ids."""
    start = time.monotonic()
    out = GenerateResult()
    for piece, ids in stream_generate(url, model, req, version, timeout_s):
        if not out.first_response_s:
            out.first_response_s = time.monotonic() - start
        out.text += piece
        out.token_ids += ids
    out.total_s = time.monotonic() - start
    return out
