"""The demo's Chinese quality figures: each measure on text whose answer is known by construction."""

from __future__ import annotations

import math

import pytest
from kiln_trainer.data.demo_corpus import is_regular_verse, is_simplified
from kiln_trainer.eval.quality import Continuation, Report, cjk_share, judge, longest_repeat, mean_loss


def test_longest_repeat_counts_back_to_back_runs_only() -> None:
    assert longest_repeat([]) == 0 and longest_repeat([4]) == 1
    assert longest_repeat([1, 2, 2, 2, 3, 2, 2]) == 3
    assert longest_repeat([5, 6, 5, 6, 5, 6]) == 1  # a phrase loop is not a run of one token


def test_cjk_share_counts_han_ideographs_and_ignores_spaces() -> None:
    assert cjk_share("明月几时有") == 1.0
    assert cjk_share("春风又绿江南岸，") == pytest.approx(7 / 8)  # punctuation counts against it
    assert cjk_share("馆馆馆馆gege") == pytest.approx(0.5)
    assert cjk_share("a 春\n") == pytest.approx(0.5)
    assert cjk_share("   ") == 0.0 and cjk_share(".TP") == 0.0 and cjk_share("》") == 0.0
    assert cjk_share("𠀀！") == pytest.approx(0.5)  # an extension-B ideograph and a full-width mark


def test_judge_tokenizes_the_continuation_with_the_given_encoder() -> None:
    per_char = judge("问", "馆馆馆馆gegege", lambda s: [ord(c) for c in s])
    assert (per_char.longest_repeat, per_char.cjk_share) == (4, 0.4)


def test_mean_loss_weights_documents_by_tokens_and_refuses_empty_input() -> None:
    losses = {(1, 2, 3): [1.0, 3.0], (4, 5): [6.0]}
    assert mean_loss(lambda ids: losses[tuple(ids)], [(1, 2, 3), (4, 5)]) == pytest.approx(10 / 3)
    with pytest.raises(ValueError, match="held-out"):
        mean_loss(lambda ids: [], [(1,)])


def test_report_meets_the_goals_only_when_every_prompt_does() -> None:
    good, looping = Continuation("春", "风吹柳絮。", 1, 1.0), Continuation("月", "馆馆馆馆", 4, 1.0)
    assert Report(4.0, round(math.exp(4.0), 2), 100, [good]).met()
    bad = Report(4.0, 54.6, 100, [good, looping])
    assert not bad.met() and bad.lines()[-1].endswith("MISSED")


def test_simplified_documents_are_told_from_traditional_ones() -> None:
    assert is_simplified("风又雨。吹面落花红舞。")
    assert not is_simplified("心逐輕波去，身随匹馬歸。")
    assert not is_simplified("no Chinese at all")


def test_regular_verse_is_five_or_seven_characters_between_marks() -> None:
    assert is_regular_verse("《送元二使安西》 王维\n\n渭城朝雨浥轻尘，客舍青青柳色新。\n劝君更尽一杯酒，西出阳关无故人。")
    assert is_regular_verse("《菩萨蛮》\n\n小山重叠金明灭，鬓云欲度香腮雪。\n懒起画蛾眉，弄妆梳洗迟。")
    # A ci of free metre (a four-character phrase), one line, a line with no mark, no title: not the cut.
    assert not is_regular_verse("《水调歌头》 苏轼\n\n明月几时有，把酒问青天。\n不知天上宫阙，今夕是何年。")
    assert not is_regular_verse("《绝句》\n\n两个黄鹂鸣翠柳，一行白鹭上青天。")
    assert not is_regular_verse("《绝句》\n\n两个黄鹂鸣翠柳\n一行白鹭上青天。")
    assert not is_regular_verse("两个黄鹂鸣翠柳，一行白鹭上青天。\n窗含西岭千秋雪，门泊东吴万里船。")
