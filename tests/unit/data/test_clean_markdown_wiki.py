"""Markdown (judged by Python-Markdown's rendering) and MediaWiki markup keep their words only."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from kiln_api.data_config import CleanSpec
from kiln_trainer.data.clean import clean_text
from kiln_trainer.data.report import Report

README = """# kiln 使用说明

kiln 在 **Kubernetes** 上训练*中文优先*的大语言模型，详见[架构文档](https://example.org/arch "架构")。

![训练曲线](docs/loss.png)

## 快速开始

1. 安装依赖：运行 `make setup`。
2. 提交任务：`kiln submit examples/tiny.yaml`。

* 数据会先经过 __清洗__ 和 ~~旧的~~ 去重。
+ 变量名 snake_case_name 保持不变。

> 注意：训练需要 GPU 或者耐心。

```python
def main() -> int:
    return 0  # **not emphasis** inside code
```

| 预设 | 参数量 | 说明 |
|------|-------:|:----:|
| tiny | 1M | 演示用 |
| base | 1B | 需要 GPU |

---

更多信息见 <https://example.org/kiln> 或[常见问题][faq]。

[faq]: https://example.org/faq
"""


class _Visible(HTMLParser):
    """The text a browser shows for rendered HTML (image alt text is not shown)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _rendered_text(md: str) -> str:
    import markdown

    parser = _Visible()
    parser.feed(markdown.markdown(md, extensions=["tables", "fenced_code"]))
    return "".join(parser.parts)


def _words(text: str) -> str:
    # list markers are drawn by the browser, not in the HTML text (kiln keeps "1." and "- ");
    # strikethrough is not Markdown core
    return re.sub(r"\s+", "", re.sub(r"^(?:\d+\.|-)\s|~~", "", text, flags=re.M))


def test_markdown_keeps_what_the_rendered_page_shows() -> None:
    out = clean_text(README, CleanSpec())
    assert _words(out) == _words(_rendered_text(README).replace("~~", ""))
    assert not re.search(r"^(?:#|>|\||\* )", out, re.M)
    for syntax in ("](", "![", "```", "|---", "[faq]", "__", "`"):
        assert syntax not in out, syntax
    assert out.count("**") == 2  # only inside the code block
    assert "kiln 在 Kubernetes 上训练中文优先的大语言模型，详见架构文档。" in out
    assert "训练曲线" not in out and "loss.png" not in out  # images go whole
    assert "snake_case_name" in out and "return 0 # **not emphasis** inside code" in out
    assert "tiny 1M 演示用" in out and "- 数据会先经过 清洗 和 旧的 去重。" in out


def test_markdown_step_counted_and_switchable() -> None:
    rep = Report()
    clean_text(README, CleanSpec(), rep)
    assert rep.get("clean_docs", "markdown") == 1 and rep.get("clean_chars_removed", "markdown") > 50
    assert "**Kubernetes**" in clean_text(README, CleanSpec(strip_markdown=False))


def test_code_with_hash_comments_is_not_markdown() -> None:
    code = "# 计算损失\nloss = fns[0](logits)\n# 反向传播\nloss.backward()"
    assert clean_text(code, CleanSpec()) == code


WIKI = """{{Infobox programming language
| name = Python
| logo = {{Logo|Python.svg}}
}}
'''Python'''是一种[[高级编程语言|高级]]、[[解释器|解释型]]的'''通用'''编程语言<ref name="a">{{cite web|url=https://x}}</ref>，由''吉多·范罗苏姆''创造。[[File:Python logo.svg|thumb|标志]]

== 历史 ==
Python 的第一个版本发布于 1991 年<ref>作者访谈</ref>。参见[https://www.python.org 官方网站]。

{| class="wikitable"
|-
! 版本 !! 年份
|-
| 2.0 || 2000
|-
| style="color:red" | 3.0 || 2008
|}
* [[Guido van Rossum]]
[[Category:编程语言]]
__NOTOC__
"""


def test_wiki_markup_keeps_article_text() -> None:
    out = clean_text(WIKI, CleanSpec())
    for syntax in ("{{", "}}", "[[", "]]", "'''", "''", "<ref", "== ", "{|", "|-", "Category", "__NOTOC__",
                   "Infobox", "cite web", "thumb"):
        assert syntax not in out, syntax
    assert out.startswith("Python是一种高级、解释型的通用编程语言，由吉多·范罗苏姆创造。")
    assert "\n历史\n" in out and "参见官方网站。" in out and "作者访谈" not in out
    assert "版本 年份\n2.0 2000\n3.0 2008" in out and "Guido van Rossum" in out


def test_wiki_step_counted_and_switchable() -> None:
    rep = Report()
    clean_text(WIKI, CleanSpec(), rep)
    assert rep.get("clean_docs", "wiki") == 1
    assert "[[解释器|解释型]]" in clean_text(WIKI, CleanSpec(strip_wiki=False))


PROSE_WITH_CODE = """Defining a class

A class body may define __init__ and accept **kwargs, as in this example:

class Grid:
    '''A grid of cells.'''
    # rows first
    def __init__(self, **kwargs):
        self.cells = [[1, 2], [3, 4]]
        self.label = '{{}}'.format(kwargs)
'B' is the second letter; '\\f' is a form feed.
== is the equality operator ==
The sequence a ** b ** c is evaluated from the right."""


def test_plain_text_with_code_is_not_taken_for_markup() -> None:
    """Python documentation text: each line has something that looks like one markup syntax."""
    assert clean_text(PROSE_WITH_CODE, CleanSpec()) == PROSE_WITH_CODE.replace("    ", "")
