"""man-page source: what is left after cleaning is what groff prints, without any roff markup."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from kiln_api.data_config import CleanSpec
from kiln_trainer.data.clean import clean_text
from kiln_trainer.data.report import Report
from realformats import MAN_PAGE_ZH, groff_body, groff_man

MARKUP = re.compile(r"^\.[A-Za-z]{1,2}\b|\\f[BIRP(\[]|\\-|\\\(|\\&|\\\"", re.M)


def _words(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_chinese_man_page_cleans_to_what_groff_prints() -> None:
    out = clean_text(MAN_PAGE_ZH, CleanSpec())
    assert not MARKUP.search(out), MARKUP.findall(out)
    assert ".TP" not in out and "\\fB" not in out and ".TH" not in out
    # groff (no escapes: overstrike off) is the judge of the text; whitespace is layout
    assert _words(out) == _words(groff_body(groff_man(MAN_PAGE_ZH, "-P-cbou")))
    # a filled Chinese paragraph reads as one line, English keeps its spaces, headings stand alone
    assert "kiln 读取一个训练任务的清单，准备数据，启动分布式训练，并把训练好的模型交给推理服务。" in out
    assert "Each run is idempotent: submitting the same manifest twice changes nothing." in out
    assert "\n\n描述\n\n" in out and "排版标记—这些" in out and "• 成功时返回 0。" in out
    assert "-n, --namespace" in out and "kubectl(1), helm(1)" in out


@pytest.mark.parametrize("page", ["ls", "tar"])
def test_installed_man_pages_clean_to_what_groff_prints(page: str) -> None:
    path = Path(f"/usr/share/man/man1/{page}.1.gz")
    if not path.exists():
        pytest.skip(f"{path} is not installed")
    src = gzip.decompress(path.read_bytes()).decode("utf-8")
    out = clean_text(src, CleanSpec())
    assert not MARKUP.search(out), MARKUP.findall(out)[:5]
    assert _words(out) == _words(groff_body(groff_man(src, "-P-cbou")))


def test_counted_and_switchable() -> None:
    rep = Report()
    clean_text(MAN_PAGE_ZH, CleanSpec(), rep)
    assert rep.get("clean_docs", "roff") == 1 and rep.get("clean_chars_removed", "roff") > 100
    assert ".TP" in clean_text(MAN_PAGE_ZH, CleanSpec(strip_roff=False))


def test_continuation_escape_joins_without_a_space() -> None:
    page = ".TH T 1\n.SH 描述\nSee\n.BR kiln (1)\\c\n, or run\n.B kiln\\c\n\\-trainer\nitself.\n"
    out = clean_text(page, CleanSpec())
    assert out == "描述\n\nSee kiln(1), or run kiln-trainer itself."
    heading, *body = groff_body(groff_man(page, "-P-cbou")).split()
    assert heading == "描述" and out.split("\n")[-1] == " ".join(body)  # what groff prints


def test_prose_with_a_leading_dot_is_not_roff() -> None:
    text = "配置文件放在 .kiln 目录下。\n.B 开头的一行并不多见。"
    assert clean_text(text, CleanSpec()) == text
