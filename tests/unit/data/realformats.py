"""Samples produced by the real tools of each format (groff, grep, ls, rich, Python-Markdown, fold).

Each helper runs the program and returns its output, so the cleaning tests see exactly what those
programs write; a test skips (with the reason) where a tool is missing on the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

MAN_PAGE_ZH = r""".\" 一个中文手册页：kiln 的测试样本
.TH KILN 1 "2026-12-07" "kiln 0.1" "用户命令"
.SH 名称
kiln \- 在 Kubernetes 上训练并部署大语言模型
.SH 概要
.B kiln
.RI [ 选项 ]
.I 运行名
.SH 描述
.B kiln
读取一个训练任务的清单，准备数据，
启动分布式训练，并把训练好的模型
交给推理服务。
数据清洗会去掉终端控制序列和排版标记\(em这些内容不应出现在训练文本里。
.PP
Each run is \fBidempotent\fR: submitting the same manifest twice
changes \fInothing\fP\&.
.SH 选项
.TP
.BR \-n ", " \-\-namespace
命名空间，默认取自
.IR kubeconfig 。
.TP
.B \-\-watch
持续刷新，直到任务结束。
.SS 退出状态
.IP \(bu 2
成功时返回 0。
.SH 参见
.BR kubectl (1),
.BR helm (1)
"""


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian: groff-base, grep, coreutils)")
    return path


def run(args: list[str], stdin: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    need(args[0])
    return subprocess.run(args, input=stdin, capture_output=True, text=True, check=True, cwd=cwd,
                          env={**os.environ, **(env or {})}).stdout


def groff_man(source: str, *device_args: str, sgr: bool = False) -> str:
    """A man page as groff lays it out for a UTF-8 terminal: `-k` reads UTF-8 input, HY=0 turns off
    hyphenation, a wide line keeps words from wrapping mid-paragraph. Debian's grotty writes
    overstrike unless GROFF_SGR is set; with `sgr` it writes SGR escape sequences instead."""
    env = {"GROFF_SGR": "1"} if sgr else {"GROFF_NO_SGR": "1"}
    return run(["groff", "-k", "-man", "-Tutf8", "-rHY=0", "-rLL=200n", *device_args], stdin=source, env=env)


def groff_body(rendered: str) -> str:
    """The rendered page without its header and footer lines."""
    lines = rendered.rstrip("\n").split("\n")
    return "\n".join(lines[1:-1])
