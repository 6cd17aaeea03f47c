"""`kiln generate`: stream a continuation from a serving target token by token."""

from __future__ import annotations

from collections.abc import Iterator

from kiln_api.triton_client import GenerateRequest, stream_generate


def stream_text(url: str, model: str, prompt: str, max_new_tokens: int, temperature: float, top_k: int = 0,
                seed: int | None = None, no_repeat_ngram: int = 0, min_new_tokens: int = 0) -> Iterator[str]:
    req = GenerateRequest(prompt=prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                          seed=seed, stream=True, no_repeat_ngram=no_repeat_ngram, min_new_tokens=min_new_tokens)
    for piece, _ in stream_generate(url, model, req):
        yield piece
