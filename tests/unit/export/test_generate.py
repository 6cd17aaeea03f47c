import pytest
import torch
from kiln_api.train_config import ModelConfig
from kiln_trainer.serving.cached import servable
from kiln_trainer.serving.generate import (
    GenerationError,
    SamplingParams,
    check_prompt,
    generate,
    generate_batch,
    repeated_ngram_ends,
)
from kiln_trainer.train.model import GPT


@pytest.fixture(scope="module", params=["gpt", "classic"])
def pair(request):
    torch.manual_seed(0)
    kv = 2 if request.param == "gpt" else None
    gpt = GPT(ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=kv, max_seq_len=48, arch=request.param))
    return gpt.eval(), servable(gpt)


def test_cached_forward_matches_full_forward(pair):
    gpt, m = pair
    x = torch.randint(0, 50, (2, 20))
    with torch.no_grad():
        full = gpt(x)
        a, past = m(x[:, :11])
        b, past = m(x[:, 11:12], past_kv=past)
        c, _ = m(x[:, 12:], past_kv=past)  # several new tokens after a cache: offset causal mask
    assert torch.allclose(torch.cat([a, b, c], dim=1), full, atol=1e-5)


def test_greedy_equals_argmax_of_full_recompute(pair):
    gpt, m = pair
    prompt = [3, 1, 4, 1, 5]
    got = generate(m, prompt, SamplingParams(max_new_tokens=10))
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(10):
            seq.append(int(gpt(torch.tensor([seq]))[0, -1].argmax()))
    assert got == seq[len(prompt):]


def test_seeded_sampling_is_reproducible_and_independent_of_batch(pair):
    _, m = pair
    p = SamplingParams(max_new_tokens=12, temperature=1.0, top_k=20, top_p=0.9, seed=7)
    alone = generate(m, [2, 7, 1], p)
    assert generate(m, [2, 7, 1], p) == alone
    batch = generate_batch(m, [[2, 7, 1], [9, 9, 9], [5]], [p, SamplingParams(max_new_tokens=3, temperature=0.5, seed=1), p])
    assert batch[0] == alone and len(batch[1]) == 3 and len(batch[2]) == 12
    assert generate(m, [2, 7, 1], SamplingParams(max_new_tokens=12, temperature=1.0, seed=8)) != alone


def test_top_k_one_is_greedy(pair):
    _, m = pair
    greedy = generate(m, [4, 4], SamplingParams(max_new_tokens=8))
    assert generate(m, [4, 4], SamplingParams(max_new_tokens=8, temperature=2.0, top_k=1, seed=3)) == greedy
    assert generate(m, [4, 4], SamplingParams(max_new_tokens=8, temperature=2.0, top_p=1e-6, seed=3)) == greedy


def test_stop_token_ends_a_row_early(pair):
    _, m = pair
    first = generate(m, [1, 2], SamplingParams(max_new_tokens=5))[0]
    assert generate(m, [1, 2], SamplingParams(max_new_tokens=5, stop_token_id=first)) == [first]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"max_new_tokens": 0}, "MAX_NEW_TOKENS"), ({"temperature": -1.0}, "TEMPERATURE"),
     ({"top_k": -1}, "TOP_K"), ({"top_p": 0.0}, "TOP_P"), ({"seed": -5}, "SEED"),
     ({"no_repeat_ngram": 1}, "NO_REPEAT_NGRAM"), ({"no_repeat_ngram": -2}, "NO_REPEAT_NGRAM"),
     ({"min_new_tokens": -1}, "MIN_NEW_TOKENS"), ({"max_new_tokens": 4, "min_new_tokens": 5}, "MIN_NEW_TOKENS")],
)
def test_bad_sampling_params_name_the_input(kwargs, name):
    with pytest.raises(GenerationError, match=name):
        SamplingParams(**kwargs)


def test_prompt_checks():
    p = SamplingParams(max_new_tokens=10)
    with pytest.raises(GenerationError, match="exceeds the model context of 48"):
        check_prompt(list(range(40)), p, 48, 50)
    with pytest.raises(GenerationError, match="empty"):
        check_prompt([], p, 48, 50)
    with pytest.raises(GenerationError, match="token id 77"):
        check_prompt([1, 77], p, 48, 50)
    check_prompt(list(range(38)), p, 48, 50)  # exactly fits


def test_left_padded_rows_match_unpadded_logits_through_decode():
    torch.manual_seed(1)
    gpt = GPT(ModelConfig(vocab_size=50, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, max_seq_len=48)).eval()
    m = servable(gpt)
    short, long = [3, 9, 4], [8, 1, 2, 7, 5, 6]
    pad = torch.tensor([3, 0])
    with torch.no_grad():
        lb, past = m(torch.tensor([[0, 0, 0, *short], long]), pad=pad)
        step_b, _ = m(torch.tensor([[11], [12]]), past_kv=past, pad=pad)
        for row, (prompt, nxt) in enumerate(((short, 11), (long, 12))):
            la, pa = m(torch.tensor([prompt]))
            step_a, _ = m(torch.tensor([[nxt]]), past_kv=pa)
            assert torch.allclose(lb[row, -len(prompt):], la[0], atol=1e-5)
            assert torch.allclose(step_b[row], step_a[0], atol=1e-5)
        assert torch.isfinite(lb).all()  # padding queries attend to themselves: no NaN leaks


def test_ragged_batch_shares_forward_passes_and_matches_single_requests():
    torch.manual_seed(2)
    m = servable(GPT(ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, max_seq_len=48)).eval())
    calls = []
    real = m.forward
    m.forward = lambda *a, **k: calls.append(1) or real(*a, **k)  # count forward passes
    prompts = [[1, 2, 3], [5, 6, 7, 8, 9, 10], [4], [7, 7, 7, 7, 7]]
    params = [SamplingParams(max_new_tokens=n) for n in (6, 3, 8, 5)]
    batch = generate_batch(m, prompts, params)
    assert len(calls) == 8  # one loop for all four rows: as many passes as the longest continuation
    assert batch == [generate(m, p, q) for p, q in zip(prompts, params, strict=True)]


def test_rows_that_cannot_share_the_context_are_split():
    m = servable(GPT(ModelConfig(vocab_size=50, d_model=32, n_layers=1, n_heads=4, max_seq_len=16)).eval())
    # 12-token prompt + 2 new, and 2-token prompt + 10 new: padded together they would need 22 > 16.
    out = generate_batch(m, [list(range(1, 13)), [1, 2]], [SamplingParams(max_new_tokens=2), SamplingParams(max_new_tokens=10)])
    assert [len(o) for o in out] == [2, 10]


def test_repeated_ngram_ends_are_the_tokens_that_would_repeat_a_phrase():
    assert repeated_ngram_ends([5, 6, 7, 5, 6], 3) == {7}  # 5 6 7 is in, so 7 after "5 6" repeats it
    assert repeated_ngram_ends([5, 6, 5, 6, 5], 2) == {6}
    assert repeated_ngram_ends([9, 9, 9], 3) == {9}  # a fourth 9 would repeat "9 9 9"
    assert repeated_ngram_ends([1, 2, 3], 3) == set() and repeated_ngram_ends([1, 1, 1], 0) == set()


class _Loop(torch.nn.Module):
    """A model whose greedy choice is always token 7, then 8: plain greedy decoding loops on 7."""

    def forward(self, input_ids, past_kv=None, use_cache=True):
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], 12)
        logits[..., 7], logits[..., 8], logits[..., 9] = 3.0, 2.0, 1.0
        return logits, None


def test_no_repeat_ngram_breaks_a_greedy_loop_and_keeps_greedy_otherwise(pair):
    loop = _Loop()
    assert generate(loop, [1], SamplingParams(max_new_tokens=6)) == [7] * 6
    # n = 3: at most three 7s in a row, then the next best token; no trigram ever comes back.
    got = generate(loop, [1], SamplingParams(max_new_tokens=8, no_repeat_ngram=3))
    assert got[:4] == [7, 7, 7, 8]
    seq = [1, *got]
    trigrams = [tuple(seq[i:i + 3]) for i in range(len(seq) - 2)]
    assert len(trigrams) == len(set(trigrams))
    # A rule that cannot bite (no 10-gram fits in 3 + 6 tokens) leaves greedy decoding as it was.
    _, m = pair
    plain = generate(m, [3, 1, 4], SamplingParams(max_new_tokens=6))
    assert generate(m, [3, 1, 4], SamplingParams(max_new_tokens=6, no_repeat_ngram=10)) == plain


def test_min_new_tokens_forbids_the_stop_token_until_the_floor():
    loop = _Loop()  # its likeliest token is 7: as the stop token, a plain request answers with it alone
    assert generate(loop, [1], SamplingParams(max_new_tokens=8, stop_token_id=7)) == [7]
    # Below the floor the stop token is never chosen (the next best, 8, comes instead); at the floor it ends the row.
    assert generate(loop, [1], SamplingParams(max_new_tokens=8, stop_token_id=7, min_new_tokens=3)) == [8, 8, 8, 7]
    # Together with the n-gram rule: both bans hold at once (no 8 8 8 8, no 7 before three tokens).
    assert generate(loop, [1], SamplingParams(max_new_tokens=8, stop_token_id=7, min_new_tokens=5,
                                              no_repeat_ngram=3)) == [8, 8, 8, 9, 8, 7]
    # Without a stop token the floor changes nothing.
    assert generate(loop, [1], SamplingParams(max_new_tokens=3, min_new_tokens=3)) == [7, 7, 7]
