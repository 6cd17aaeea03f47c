"""Model shapes and attention masks, the window sampler, masking and the LR schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kiln_api.train_config import ModelConfig, OptimConfig, ScheduleConfig
from kiln_trainer.train.data import IGNORE, WindowSampler, masked_inputs, micro_batch_start
from kiln_trainer.train.model import GPT, count_params, flops_per_token, model_config_json, model_from_json
from kiln_trainer.train.schedule import lr_at


def _future_leak(cfg: ModelConfig) -> float:
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    x = torch.randint(0, cfg.vocab_size, (1, 16))
    y = x.clone()
    y[0, 10] = (y[0, 10] + 1) % cfg.vocab_size
    with torch.no_grad():
        return float((model(x)[0, :10] - model(y)[0, :10]).abs().max())


@pytest.mark.parametrize("arch", ["gpt", "classic"])
def test_causal_model_does_not_see_the_future_masked_does(arch: str) -> None:
    kv = 2 if arch == "gpt" else None
    causal = ModelConfig(vocab_size=50, d_model=32, n_heads=4, n_kv_heads=kv, max_seq_len=32, arch=arch)
    assert _future_leak(causal) < 1e-5
    masked = ModelConfig(vocab_size=50, d_model=32, n_heads=4, n_kv_heads=kv, max_seq_len=32, arch=arch,
                         objective="masked")
    assert _future_leak(masked) > 1e-4


def test_model_shapes_tied_weights_and_config_roundtrip() -> None:
    cfg = ModelConfig(vocab_size=64, d_model=32, n_heads=4, n_kv_heads=1, n_layers=3, max_seq_len=16)
    model = GPT(cfg)
    assert model(torch.zeros(2, 16, dtype=torch.long)).shape == (2, 16, 64)
    assert model.lm_head.weight is model.tok_emb.weight
    assert sum(p.numel() for p in model.parameters()) == count_params(cfg)
    assert all("rope" not in k for k in model.state_dict())  # derived tables are not weights
    again = model_from_json(model_config_json(cfg))
    again.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown field 'bogus'"):
        model_from_json('{"bogus": 1}')


def test_flops_per_token_formula() -> None:
    cfg = ModelConfig(vocab_size=100, d_model=64, n_heads=4, n_layers=2, max_seq_len=128)
    assert flops_per_token(cfg, 128, n_params=1000) == 6 * 1000 + 12 * 2 * 4 * 16 * 128


def test_sampler_covers_each_window_once_per_epoch_for_any_world_size() -> None:
    tokens = np.arange(10 * 8 + 1, dtype=np.uint16)
    s = WindowSampler(tokens, seq_len=8, seed=3)
    per_step = 4

    def consumed(world: int, micro: int) -> list[int]:
        accum = per_step // (world * micro)
        out = []
        for step in range(5):  # 5 steps × 4 = 20 sequences = 2 epochs
            for a in range(accum):
                for r in range(world):
                    first = micro_batch_start(step * per_step, a, r, world, micro)
                    out.extend(int(w[0]) for w in s.batch(first, micro))
        return sorted(out)

    one = consumed(1, 2)
    assert one == consumed(2, 1) == consumed(4, 1)
    assert one == sorted(list(range(0, 80, 8)) * 2)  # no window replayed or skipped within an epoch
    assert not np.array_equal(s.batch(0, 10)[:, 0], s.batch(10, 10)[:, 0])  # epochs are reshuffled


def test_too_little_data_names_the_split() -> None:
    with pytest.raises(ValueError, match="data.val_split"):
        WindowSampler(np.arange(5), seq_len=8, seed=0, split="val")


def test_masking_ratio_is_drawn_in_range() -> None:
    gen = torch.Generator().manual_seed(0)
    windows = torch.randint(0, 100, (8, 257))
    ratios = []
    for _ in range(30):
        inputs, labels, ratio = masked_inputs(windows, mask_id=100, vocab_size=101, gen=gen)
        chosen = labels != IGNORE
        ratios.append(ratio)
        assert 0.1 < float(chosen.float().mean()) < 0.3
        assert float((inputs[chosen] == 100).float().mean()) > 0.6
        assert torch.equal(inputs[~chosen], windows[:, :-1][~chosen])
    assert min(ratios) >= 0.15 and max(ratios) <= 0.25 and max(ratios) - min(ratios) > 0.05


def test_lr_schedule_warmup_cosine_floor() -> None:
    o, s = OptimConfig(lr=1.0), ScheduleConfig(warmup_steps=10, min_lr_ratio=0.1, max_steps=110)
    lrs = [lr_at(i, 110, o, s) for i in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5, abs=0.01)
    assert lr_at(500, 110, o, s) == pytest.approx(0.1)


def test_plot_metrics(tmp_path) -> None:  # noqa: ANN001
    import json

    from kiln_trainer.train.plot import plot_metrics

    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps({"step": i, "loss": 5 - i * 0.1, "lr": 0.001, "grad_norm": 1.0,
                                          **({"val_loss": 5.0 - i * 0.1} if i % 5 == 0 else {})}) for i in range(20)))
    out = plot_metrics(path, tmp_path / "m.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no records"):
        plot_metrics(tmp_path / "empty.jsonl", tmp_path / "e.png")


def test_sharded_tokens_read_across_shard_boundaries() -> None:
    from kiln_trainer.train.data import ShardedTokens

    whole = np.arange(100, dtype=np.uint16)
    view = ShardedTokens([whole[:30], whole[30:30], whole[30:77], whole[77:]])
    assert len(view) == 100
    for start, stop in [(0, 10), (25, 35), (28, 80), (76, 78), (90, 100), (0, 100), (95, 120)]:
        assert np.array_equal(view[start:stop], whole[start:stop])
    s = WindowSampler(view, seq_len=9, seed=1)  # type: ignore[arg-type]
    plain = WindowSampler(whole, seq_len=9, seed=1)
    assert torch.equal(s.batch(0, 11), plain.batch(0, 11))


def test_advisor_warnings() -> None:
    from kiln_trainer.train.metrics import Advisor

    adv = Advisor(window=4)
    assert adv.check(5.0, 1.0, 95.0) == []
    assert adv.check(4.9, 20.0, None) == ["grad norm 20 is outside 0.1-10"]
    assert adv.check(4.8, 0.05, 50.0) == ["grad norm 0.05 is outside 0.1-10", "GPU utilization 50% is below 85%"]
    assert adv.check(4.7, 1.0, None) == []  # a steady decline is not an oscillation
    swings = [adv.check(x, 1.0, None) for x in (6.0, 4.0, 6.0, 4.0)]
    assert any("oscillates" in w for w in swings[-1])
