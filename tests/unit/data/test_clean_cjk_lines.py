"""Chinese hard-wrapped by real wrappers (fold, textwrap, groff) joins back; paragraphs and English stay."""

from __future__ import annotations

import re
import textwrap

from kiln_api.data_config import CleanSpec
from kiln_trainer.data.clean import clean_text
from kiln_trainer.data.report import Report
from realformats import run

P1 = ("数据准备会把原始文本清洗、去重，再用 SentencePiece 训练分词器。所有文档被打包成固定长度的"
      "分片，训练时按顺序读取，断点续训也不会重复或跳过数据。")
P2 = "清洗后的每一步都有计数：处理了多少文档，删掉了多少字符，都写在报告里。“是这样吗？”他问。"
EN = ("Hard-wrapped English keeps its line breaks, because a break between two Latin words may be a "
      "list item or a line of verse as well as a wrap.")


def _clean(text: str, **kw: bool) -> str:
    return clean_text(text, CleanSpec(**kw))


def test_textwrap_wrapped_paragraphs_join_and_stay_apart() -> None:
    wrapped = "\n\n".join(textwrap.fill(p, width=17) for p in (P1, P2))
    assert wrapped.count("\n") > 6
    assert _clean(wrapped) == P1 + "\n\n" + P2


def test_fold_wrapped_text_joins() -> None:
    # fold counts bytes: a CJK-only text of 3-byte characters wraps cleanly at a multiple of 3
    zh = "断行不是分段。" * 12 + "空行才是分段。"
    folded = run(["fold", "-w", "30"], stdin=zh + "\n\n" + zh + "\n")
    assert folded.count("\n") >= 10
    assert _clean(folded) == zh + "\n\n" + zh


def test_english_wraps_and_indented_chinese_paragraphs_stay() -> None:
    en = textwrap.fill(EN, width=40)
    assert _clean(en) == en  # documented: breaks between Latin words are kept
    indented = "\u3000\u3000第一段写完了。\n\u3000\u3000第二段另起一行。"
    assert _clean(indented) == "第一段写完了。\n第二段另起一行。"
    mixed = "模型使用\nPython 编写"
    assert _clean(mixed) == mixed  # a break next to Latin text cannot be told from a list: kept


def test_groff_filled_chinese_output_joins() -> None:
    # groff and man wrap a rendered Chinese page at the terminal width, inside sentences
    rendered = run(["groff", "-k", "-man", "-Tutf8", "-P-cbou", "-rLL=30n"], stdin=".TH T 1\n.SH 描述\n" + P1 + "\n")
    body = rendered.split("描述", 1)[1].rsplit("\n\n", 1)[0]
    assert body.count("\n") > 3
    out = _clean(body)
    assert "分词器。所有文档被打包成固定长度的分片，训练时按顺序读取" in out
    # groff broke at the spaces around the Latin word; those breaks stay (see cjk_lines' doc)
    assert re.sub(r"\s*SentencePiece\s*", "", out) == P1.replace(" SentencePiece ", "")


def test_counted_and_switchable() -> None:
    wrapped = textwrap.fill(P1, width=17)
    rep = Report()
    clean_text(wrapped, CleanSpec(), rep)
    assert rep.get("clean_docs", "cjk_lines") == 1
    assert rep.get("clean_chars_removed", "cjk_lines") == wrapped.count("\n")
    assert _clean(wrapped, join_cjk_lines=False).count("\n") == wrapped.count("\n")
