"""Terminal escape sequences from real programs go whole; the text they coloured stays exactly."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from kiln_api.data_config import CleanSpec
from kiln_trainer.data.clean import clean_text
from kiln_trainer.data.report import Report
from realformats import MAN_PAGE_ZH, groff_body, groff_man, run

LOG = "错误: 找不到数据文件 corpus.jsonl\n警告: 磁盘空间不足\nwarning: disk almost full\n信息: 训练开始\n"
LEFTOVER = re.compile(r"\[[\d;]*[mK]")


def _clean(text: str) -> str:
    return clean_text(text, CleanSpec())


def _assert_no_terminal_codes(text: str) -> None:
    assert "\x1b" not in text and not re.search("[\x80-\x9f]", text)
    assert not LEFTOVER.search(text), LEFTOVER.findall(text)


def test_grep_colour_output_cleans_to_the_uncoloured_output(tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_text(LOG, encoding="utf-8")
    args = ["grep", "-E", "错误|警告|warning", "log.txt"]
    coloured = run([*args[:1], "--color=always", *args[1:]], cwd=tmp_path)
    plain = run([*args[:1], "--color=never", *args[1:]], cwd=tmp_path)
    assert "\x1b[01;31m" in coloured  # the sample really is coloured
    _assert_no_terminal_codes(_clean(coloured))
    assert _clean(coloured) == _clean(plain)


def test_ls_colours_and_osc8_hyperlinks(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "训练数据").mkdir()
    (tmp_path / "d" / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "d" / "run.sh").chmod(0o755)
    coloured = run(["ls", "--color=always", "--hyperlink=always", str(tmp_path / "d")])
    plain = run(["ls", "--color=never", str(tmp_path / "d")])
    assert "\x1b]8;;file://" in coloured  # OSC 8 carries a URL that must not become text
    out = _clean(coloured)
    _assert_no_terminal_codes(out)
    assert "file://" not in out and out == _clean(plain)


def test_groff_sgr_and_overstrike_renderings_of_a_chinese_man_page() -> None:
    sgr = groff_body(groff_man(MAN_PAGE_ZH, sgr=True))  # SGR bold/underline
    overstrike = groff_body(groff_man(MAN_PAGE_ZH))  # Debian's default: X\bX and _\bX
    plain = groff_body(groff_man(MAN_PAGE_ZH, "-P-cbou"))
    assert "\x1b[1m" in sgr and "\x08" in overstrike
    for sample in (sgr, overstrike):
        out = _clean(sample)
        _assert_no_terminal_codes(out)
        assert "\x08" not in out
        assert out == _clean(plain)
    assert "kiln 读取一个训练任务的清单" in _clean(sgr)


def test_rich_truecolour_output() -> None:
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, color_system="truecolor", width=80)
    console.print("[bold red]训练失败[/]：第 [cyan]1200[/] 步的损失变成了 [magenta]NaN[/]。")
    assert "\x1b[" in buf.getvalue()
    assert _clean(buf.getvalue()) == "训练失败：第 1200 步的损失变成了 NaN。"


def test_eight_bit_c1_forms_of_the_same_sequences(tmp_path: Path) -> None:
    # No program here writes 8-bit C1 controls, so the real 7-bit output is rewritten into them:
    # CSI ESC[ -> 0x9B, OSC ESC] -> 0x9D, ST ESC\ -> 0x9C, BEL-terminated OSC kept as is.
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "说明.txt").write_text("x")
    seven = run(["ls", "--color=always", "--hyperlink=always", str(tmp_path / "d")])
    eight = seven.replace("\x1b[", "\x9b").replace("\x1b]", "\x9d").replace("\x1b\\", "\x9c")
    assert "\x1b" not in eight
    assert _clean(eight) == "说明.txt"


def test_remnants_whose_esc_was_already_removed(tmp_path: Path) -> None:
    """What the issue saw: an earlier filter dropped ESC alone and left `[33m` ... `[m`."""
    (tmp_path / "log.txt").write_text(LOG, encoding="utf-8")
    coloured = run(["grep", "--color=always", "-E", "错误|警告", "log.txt"], cwd=tmp_path)
    esc_lost = coloured.replace("\x1b", "")
    assert "[01;31m" in esc_lost
    out = _clean(esc_lost)
    _assert_no_terminal_codes(out)
    assert out == _clean(run(["grep", "--color=never", "-E", "错误|警告", "log.txt"], cwd=tmp_path))
    # a bare `[m` in a document without numbered remnants is ordinary text
    assert _clean("speed [m/s] and [m]") == "speed [m/s] and [m]"


@pytest.mark.parametrize("off", [False, True])
def test_the_step_is_counted_and_can_be_switched_off(off: bool) -> None:
    rep = Report()
    text = "\x1b[33mwarning\x1b[m: 显存不足"
    out = clean_text(text, CleanSpec(strip_terminal=not off), rep)
    if off:
        assert "[33m" in out and rep.get("clean_docs", "terminal") == 0
    else:
        assert out == "warning: 显存不足"
        assert rep.get("clean_docs", "terminal") == 1
        assert rep.get("clean_chars_removed", "terminal") == len(text) - len(out)
