from __future__ import annotations

import random

import pytest
from kiln_api.data_config import CleanSpec, FilterSpec
from kiln_trainer.data import tinycorpus
from kiln_trainer.data.clean import clean_text, dedup_key
from kiln_trainer.data.filters import check_date, check_quality, repeated_ngram_ratio

ZH = "今天早上，小明去了公园。他在小河边找到了一本旧书，非常好奇！“这是谁的书？”他问王老师。"
EN = "Early in the morning, Anna the baker walked to the old harbour and found a letter with no name."


def test_nfkc_folds_fullwidth_latin_but_keeps_chinese_punctuation() -> None:
    out = clean_text("ＡＢＣ１２３ " + ZH, CleanSpec())
    assert out.startswith("ABC123 ")
    assert out.endswith(ZH)  # ，！？ and “” unchanged


def test_markup_controls_and_whitespace() -> None:
    raw = "<p>Hello&nbsp;&amp; <b>world</b></p>\x07\r\n\r\n\r\n\r\n  second\tline  "
    assert clean_text(raw, CleanSpec()) == "Hello & world\n\nsecond line"
    # comparisons in prose are not tags
    assert clean_text("if a < b and c > d", CleanSpec()) == "if a < b and c > d"


def test_dedup_key_ignores_case_and_wrapping() -> None:
    assert dedup_key("Hello  World\nagain") == dedup_key("hello world again")


@pytest.mark.parametrize("text", [EN, ZH, EN + " " + ZH])
def test_natural_english_and_chinese_pass_every_rule(text: str) -> None:
    assert check_quality(text, FilterSpec()) is None


def test_generated_corpus_mostly_passes() -> None:
    rng = random.Random(1)
    docs = [tinycorpus.paragraph(rng, lang) for lang in ("en", "zh") for _ in range(200)]
    rejected = [d for d in docs if check_quality(d, FilterSpec())]
    assert len(rejected) < len(docs) * 0.05


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("too short", "too_short"),
        ("你好", "too_short"),
        ("some words here and there " + "$$ ^^ ~~ ++ == || <> `` " * 4, "symbol_ratio"),
        ("1234567890 9876543210 55555 77777 and a few words here", "digit_ratio"),
        ("buy now " * 30, "repeated_ngrams"),
        ("买一送一" * 30, "repeated_ngrams"),
        ("valid words \ufffd\ufffd\ufffd broken text here ok", "bad_chars"),
    ],
)
def test_each_rule_rejects_with_its_reason(text: str, reason: str) -> None:
    assert check_quality(text, FilterSpec()) == reason


def test_chinese_length_counts_characters_not_spaces() -> None:
    # 12 CJK characters, no spaces at all: 12 units, enough for min_units=10
    assert check_quality("我们今天一起去公园散步了", FilterSpec(min_units=10)) is None
    assert check_quality("我们今天一起去公园散步了", FilterSpec(min_units=13)) == "too_short"


def test_repeated_ngram_ratio_values() -> None:
    assert repeated_ngram_ratio(list("abcdef"), 2) == 0.0
    assert repeated_ngram_ratio(list("ababab"), 2) == pytest.approx(3 / 5)


def test_date_window() -> None:
    spec = FilterSpec(date_from="2020-01-01", date_to="2020-12-31")
    assert check_date("2020-06-01T10:00:00Z", spec) is None
    assert check_date("2019-12-31", spec) == "date_window"
    assert check_date("2021-01-01", spec) == "date_window"
    assert check_date("", spec) is None  # undated documents are kept
    assert check_date("June 2020", spec) == "bad_date"
    assert check_date("2019-01-01", FilterSpec()) is None  # no window configured


def test_html_inline_tags_leave_nothing_block_tags_a_break() -> None:
    raw = "<div><p>模型在<b>中文</b>文本上<a href='/x'>训练</a>。</p><p>第二段<br>新的一行</p></div>"
    assert clean_text(raw, CleanSpec()) == "模型在中文文本上训练。\n\n第二段\n\n新的一行"
    assert clean_text("<ul><li>第一项</li><li>第二项</li></ul>", CleanSpec()) == "第一项\n\n第二项"
    assert clean_text("<table><tr><td>tiny</td><td>1M</td></tr></table>", CleanSpec()) == "tiny 1M"
