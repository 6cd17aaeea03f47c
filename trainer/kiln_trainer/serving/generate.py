"""Autoregressive generation with a KV cache, pure torch; the same code runs in-process and in Triton.

The model contract is small: `model(input_ids, past_kv=None, use_cache=True) -> (logits, new_past)`
with `input_ids` of shape [batch, time], `logits` of shape [batch, time, vocab], and `new_past` an
opaque cache handed back on the next call. A model that sets `supports_padding` also takes
`pad=` (left-padding columns per row): then `generate_batch` left-pads prompts of different lengths
into one batch, so all concurrent requests share every forward pass. Other models get one batched
decode loop per prompt length.

Sampling: temperature 0 is greedy (argmax); otherwise logits / temperature, then top-k, then top-p
(nucleus), then one draw from a per-request `torch.Generator` seeded by `seed`, so a seeded request
gives the same tokens regardless of what else is in its batch.

`no_repeat_ngram` (off by default) is a decoding rule, not part of the model: before each pick, every
token that would complete an n-gram already present in the prompt + continuation is removed (the
rule of Hugging Face's `no_repeat_ngram_size`). With n = 3 no token can follow itself more than
three times and no three-token phrase comes back. Greedy decoding stays deterministic under it.

`min_new_tokens` (0 by default) is the EOS floor of Hugging Face's `min_new_tokens`: the stop token
is removed from the choices until that many tokens have been generated, so a small model whose
likeliest token after a prompt is EOS still answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class GenerationError(ValueError):
    """A request that cannot be served; the message names the offending input."""


class CausalLM(Protocol):
    def __call__(
        self, input_ids: torch.Tensor, past_kv: Any = None, use_cache: bool = True
    ) -> tuple[torch.Tensor, Any]: ...


@dataclass(frozen=True)
class SamplingParams:
    """How to continue one prompt."""

    max_new_tokens: int = 32
    """Number of tokens to generate (fewer if `stop_token_id` comes first); must be >= 1."""

    temperature: float = 0.0
    """0 means greedy decoding; otherwise the softmax temperature (> 0)."""

    top_k: int = 0
    """Keep only the k most likely tokens before sampling; 0 keeps all."""

    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability mass reaches top_p (0 < top_p <= 1)."""

    seed: int | None = None
    """Seed of this request's random generator; None draws one from torch's global generator."""

    stop_token_id: int | None = None
    """Generation of a request ends after it emits this token (usually the tokenizer's EOS)."""

    no_repeat_ngram: int = 0
    """n >= 2: never emit a token that repeats an n-gram of the prompt + continuation; 0 turns it off."""

    min_new_tokens: int = 0
    """The stop token cannot be chosen before this many tokens are out (0 <= it <= max_new_tokens)."""

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise GenerationError(f"MAX_NEW_TOKENS: must be an integer >= 1, got {self.max_new_tokens!r}")
        if not self.temperature >= 0 or self.temperature != self.temperature:
            raise GenerationError(f"TEMPERATURE: must be >= 0, got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise GenerationError(f"TOP_K: must be an integer >= 0, got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"TOP_P: must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise GenerationError(f"SEED: must be in [0, 2^63), got {self.seed!r}")
        n = self.no_repeat_ngram
        if isinstance(n, bool) or not isinstance(n, int) or n < 0 or n == 1:
            raise GenerationError(f"NO_REPEAT_NGRAM: must be 0 (off) or an integer >= 2, got {n!r}")
        m = self.min_new_tokens
        if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m <= self.max_new_tokens:
            raise GenerationError(f"MIN_NEW_TOKENS: must be an integer in [0, MAX_NEW_TOKENS={self.max_new_tokens}], "
                                  f"got {m!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def check_prompt(prompt_ids: Sequence[int], params: SamplingParams, context_length: int, vocab_size: int) -> None:
    """Reject prompts that are empty, hold unknown ids, or do not fit the context with the continuation."""
    if len(prompt_ids) == 0:
        raise GenerationError("TEXT/INPUT_IDS: the prompt is empty")
    bad = [t for t in prompt_ids if not 0 <= int(t) < vocab_size]
    if bad:
        raise GenerationError(f"INPUT_IDS: token id {bad[0]} is outside the vocabulary [0, {vocab_size})")
    total = len(prompt_ids) + params.max_new_tokens
    if total > context_length:
        raise GenerationError(
            f"TEXT/INPUT_IDS: prompt of {len(prompt_ids)} tokens + MAX_NEW_TOKENS {params.max_new_tokens} "
            f"= {total} exceeds the model context of {context_length} tokens"
        )


def _filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Apply temperature, top-k and top-p to one row of logits [vocab]; removed entries become -inf."""
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token when the mass *before* it already reaches top_p; the first always stays.
        drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def repeated_ngram_ends(seq: Sequence[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram already in `seq` if appended to it (empty for n < 2)."""
    if n < 2 or len(seq) < n:
        return set()
    head = list(seq[len(seq) - n + 1:])  # the n-1 tokens a new n-gram would start with
    return {int(seq[i + n - 1]) for i in range(len(seq) - n + 1) if list(seq[i:i + n - 1]) == head}


def banned_tokens(seq: Sequence[int], produced: int, params: SamplingParams) -> set[int]:
    """Tokens the next pick may not be: n-gram repeats, and the stop token below the EOS floor."""
    banned = repeated_ngram_ends(seq, params.no_repeat_ngram)
    if produced < params.min_new_tokens and params.stop_token_id is not None:
        banned.add(params.stop_token_id)
    return banned


def _make_generator(params: SamplingParams) -> torch.Generator | None:
    if params.greedy:
        return None
    gen = torch.Generator()
    seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
    gen.manual_seed(seed)
    return gen


def _pick(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    """Choose the next token from one row of last-position logits [vocab]."""
    if params.greedy:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(_filter_logits(logits.float(), params), dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen).item())


TokenCallback = Callable[[int, int], None]
"""on_token(request_index, token_id), called as soon as each token is chosen (for streaming)."""


@torch.inference_mode()
def _generate_group(
    model: CausalLM,
    prompts: list[Sequence[int]],
    params: list[SamplingParams],
    indices: list[int],
    on_token: TokenCallback | None,
) -> list[list[int]]:
    """One batched decode loop; prompts of different lengths are left-padded (model must allow it)."""
    gens = [_make_generator(p) for p in params]
    out: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    steps = max(p.max_new_tokens for p in params)
    width = max(len(p) for p in prompts)
    pads = [width - len(p) for p in prompts]
    x = torch.tensor([[0] * n + list(p) for n, p in zip(pads, prompts, strict=True)], dtype=torch.long)
    extra: dict[str, Any] = {"pad": torch.tensor(pads)} if any(pads) else {}
    past: Any = None
    for _ in range(steps):
        logits, past = model(x, past_kv=past, use_cache=True, **extra)
        last = logits[:, -1, :]
        nxt: list[int] = []
        for row in range(len(prompts)):
            if done[row]:
                nxt.append(0)  # a finished row still rides along the batch; its tokens are ignored
                continue
            row_logits = last[row]
            banned = banned_tokens([*prompts[row], *out[row]], len(out[row]), params[row])
            if banned:
                row_logits = row_logits.clone()
                row_logits[list(banned)] = float("-inf")
            tok = _pick(row_logits, params[row], gens[row])
            nxt.append(tok)
            out[row].append(tok)
            if on_token is not None:
                on_token(indices[row], tok)
            if len(out[row]) >= params[row].max_new_tokens or tok == params[row].stop_token_id:
                done[row] = True
        if all(done):
            break
        x = torch.tensor(nxt, dtype=torch.long).unsqueeze(1)
    return out


def _groups(model: CausalLM, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams]) -> list[list[int]]:
    """Request indices that can share one decode loop."""
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    if not getattr(model, "supports_padding", False) or len(by_len) == 1:
        return list(by_len.values())
    # Padded rows share one tensor, so the longest prompt plus the most new tokens must fit.
    limit = int(getattr(model, "max_seq_len", 1 << 30))
    groups: list[list[int]] = []
    width = steps = 0
    for i in sorted(range(len(prompts)), key=lambda i: len(prompts[i])):
        w, n = max(width, len(prompts[i])), max(steps, params[i].max_new_tokens)
        if groups and w + n <= limit:
            groups[-1].append(i)
            width, steps = w, n
        else:
            groups.append([i])
            width, steps = len(prompts[i]), params[i].max_new_tokens
    return groups


def generate_batch(
    model: CausalLM,
    prompts: Sequence[Sequence[int]],
    params: Sequence[SamplingParams],
    on_token: TokenCallback | None = None,
) -> list[list[int]]:
    """Continue several prompts, sharing forward passes between them where the model allows.

    Prompts must have been checked with `check_prompt`. Returns the new tokens per prompt.
    """
    if len(prompts) != len(params):
        raise GenerationError(f"got {len(prompts)} prompts but {len(params)} sampling params")
    results: list[list[int]] = [[] for _ in prompts]
    for members in _groups(model, prompts, params):
        outs = _generate_group(
            model, [prompts[i] for i in members], [params[i] for i in members], members, on_token
        )
        for i, toks in zip(members, outs, strict=True):
            results[i] = toks
    return results


def generate(model: CausalLM, prompt_ids: Sequence[int], params: SamplingParams) -> list[int]:
    """Continue one prompt (the in-process reference for the served model)."""
    return generate_batch(model, [prompt_ids], [params])[0]

