"""The served model's request logic, free of Triton imports so it is unit-testable.

`serving/model.py` (the Triton python backend entry) turns each Triton request into a dict of numpy
arrays, calls `parse_request`, runs `generate_batch` once for every valid request of an `execute`
call (that is where concurrent requests share forward passes), and sends what `outputs` builds.

Inputs (all but one of TEXT / INPUT_IDS optional; scalars may carry a leading batch dim of 1):
TEXT (BYTES), INPUT_IDS (INT64 [-1]), MAX_NEW_TOKENS (INT32, default 32), TEMPERATURE (FP32,
0 = greedy), TOP_K (INT32), TOP_P (FP32), SEED (INT64), STREAM (BOOL: one response per token),
NO_REPEAT_NGRAM (INT32, 0 = off: see `generate.SamplingParams.no_repeat_ngram`), MIN_NEW_TOKENS (INT32,
0 = off: no EOS before that many tokens).
Outputs: TEXT (the decoded new tokens; per streamed response, the new piece) and TOKEN_IDS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kiln_trainer.serving.generate import GenerationError, SamplingParams, check_prompt
from kiln_trainer.serving.loader import Served

DEFAULT_MAX_NEW_TOKENS = 32


@dataclass(frozen=True)
class Request:
    """One parsed request."""

    prompt_ids: list[int]
    params: SamplingParams
    stream: bool


def _scalar(inputs: Mapping[str, np.ndarray], name: str) -> Any:
    arr = inputs.get(name)
    if arr is None:
        return None
    flat = np.asarray(arr).reshape(-1)
    if flat.size != 1:
        raise GenerationError(f"{name}: expected one value, got {flat.size}")
    value = flat[0]
    return value.item() if hasattr(value, "item") else value  # BYTES come back as plain bytes


def parse_request(inputs: Mapping[str, np.ndarray], served: Served) -> Request:
    """Validate one request's tensors; raises GenerationError naming the input."""
    text, ids = inputs.get("TEXT"), inputs.get("INPUT_IDS")
    if (text is None) == (ids is None):
        raise GenerationError("TEXT/INPUT_IDS: give exactly one of them")
    if ids is not None:
        prompt = [int(t) for t in np.asarray(ids).reshape(-1)]
    else:
        raw = _scalar(inputs, "TEXT")
        prompt = served.encode(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    max_new = _scalar(inputs, "MAX_NEW_TOKENS")
    temperature = _scalar(inputs, "TEMPERATURE")
    top_k, top_p, seed = _scalar(inputs, "TOP_K"), _scalar(inputs, "TOP_P"), _scalar(inputs, "SEED")
    params = SamplingParams(
        max_new_tokens=DEFAULT_MAX_NEW_TOKENS if max_new is None else int(max_new),
        temperature=0.0 if temperature is None else float(temperature),
        top_k=0 if top_k is None else int(top_k),
        top_p=1.0 if top_p is None else float(top_p),
        seed=None if seed is None else int(seed),
        stop_token_id=served.eos_id,
        no_repeat_ngram=int(_scalar(inputs, "NO_REPEAT_NGRAM") or 0),
        min_new_tokens=int(_scalar(inputs, "MIN_NEW_TOKENS") or 0),
    )
    check_prompt(prompt, params, served.context_length, served.vocab_size)
    stream = bool(_scalar(inputs, "STREAM") or False)
    return Request(prompt, params, stream)


def outputs(served: Served, tokens: list[int]) -> dict[str, np.ndarray]:
    """Output tensors (with the batch dim of 1) for a list of new tokens."""
    text = served.decode(tokens).encode("utf-8")
    return {
        "TEXT": np.array([[text]], dtype=np.object_),
        "TOKEN_IDS": np.array([tokens], dtype=np.int64).reshape(1, len(tokens)),
    }
