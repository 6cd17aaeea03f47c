"""Real, permissively licensed text that package registries serve, fetched like any dependency.

    python -m kiln_trainer.data.registry_corpus fetch chinese-poetry   # prints the folder
    python -m kiln_trainer.data.registry_corpus stats chinese-poetry   # documents and MB after cleaning

Each corpus is a pinned package, downloaded with the registry's own client (``npm pack``,
``apt-get download``), converted to ``docs-NNNN.jsonl.zst`` (field ``text``) under
``$KILN_CACHE/corpora/<name>-<version>/`` (default ``~/.cache/kiln``), next to the package's licence
file. Nothing of it is committed. Point a prepare source at the folder (``file:///…/*.jsonl.zst``)
or upload it to the run's bucket for a cluster run.

- ``chinese-poetry`` (npm ``chinese-poetry`` 2.0.1, MIT, its ``LICENSE``; the texts themselves are
  classical — Tang and Song poetry, Song ci, Yuan qu, the Analects, Mencius, the Book of Songs,
  Chu ci, primers such as the Three Character Classic and 古文观止 — public domain by age). One
  document per poem or chapter; poet biographies are documents too. Mostly traditional characters.
- ``python-docs`` (Debian ``python3.11-doc``, PSF License 2.0, its ``copyright``): the English Python
  documentation; one document per HTML page, main body only, block elements as paragraphs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import zstandard

DOCS_PER_FILE = 20_000


@dataclass(frozen=True)
class RegistryCorpus:
    """A package that carries text, how to fetch it and how to turn its files into documents."""

    name: str
    registry: str  # "npm" or "debian"
    package: str
    version: str  # npm: pinned; debian: "" (the suite's current version; source.json records which)
    licence: str
    licence_file: str  # path inside the package
    documents: Callable[[tarfile.TarFile], Iterator[str]]


def _cache_root() -> Path:
    return Path(os.environ.get("KILN_CACHE") or Path.home() / ".cache" / "kiln") / "corpora"


# ------------------------------------------------------------------ chinese-poetry


def _poetry_doc(d: dict[str, object]) -> str | None:
    """A poem/chapter (`paragraphs`), a biography (`name` + `desc`) or an aphorism (`content`)."""
    paras = d.get("paragraphs")
    if isinstance(paras, list) and paras and all(isinstance(p, str) for p in paras):
        title = next((str(d[k]) for k in ("title", "chapter", "rhythmic") if isinstance(d.get(k), str)), "")
        head = " ".join(x for x in (f"《{title}》" if title else "", str(d.get("author") or "").strip()) if x)
        return (head + "\n\n" if head else "") + "\n".join(p for p in paras if p.strip())
    if isinstance(d.get("desc"), str) and isinstance(d.get("name"), str):
        return f"{d['name']}\n\n{d['desc']}"
    if isinstance(d.get("content"), str):
        comments = d.get("comment") if isinstance(d.get("comment"), list) else []
        return "\n\n".join([str(d["content"]), *map(str, comments or [])])
    return None


def _walk(node: object) -> Iterator[str]:
    if isinstance(node, list):
        for x in node:
            yield from _walk(x)
    elif isinstance(node, dict):
        doc = _poetry_doc(node)
        if doc is not None:
            yield doc
        else:
            for v in node.values():
                yield from _walk(v)


def chinese_poetry_documents(tar: tarfile.TarFile) -> Iterator[str]:
    # rank/ (popularity counts) and strains/ (tone patterns) hold no text
    for m in sorted(tar.getmembers(), key=lambda m: m.name):
        if not m.isfile() or not m.name.endswith(".json") or re.search(r"/dist/(rank|strains)/", m.name):
            continue
        f = tar.extractfile(m)
        if f is None:
            continue
        try:
            data = json.loads(f.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # a few files in the package are not JSON (error logs)
        yield from _walk(data)


# ------------------------------------------------------------------ python-docs


class _SphinxBody(HTMLParser):
    """The text of a Sphinx page's main body: block elements become paragraphs, permalinks go."""

    BLOCKS = {"p", "div", "section", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "pre", "tr",
              "table", "blockquote", "br"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0  # nesting of <div> inside <div role="main">; 0: outside it
        self.skipping: str | None = None  # the tag whose content is dropped (script, style, permalink)
        self.pre = 0
        self.out: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if self.depth == 0:
            self.depth = int(tag == "div" and a.get("role") == "main")
            return
        self.depth += tag == "div"
        if self.skipping is None and (tag in ("script", "style") or "headerlink" in (a.get("class") or "")):
            self.skipping = tag
        self.pre += tag == "pre"
        if tag in self.BLOCKS:
            self.out.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if self.depth == 0:
            return
        self.depth -= tag == "div"
        if tag == self.skipping:
            self.skipping = None
        self.pre -= tag == "pre" and self.pre > 0
        if tag in self.BLOCKS:
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.depth and self.skipping is None:
            self.out.append(data if self.pre else re.sub(r"\s+", " ", data))

    def text(self) -> str:
        return re.sub(r"\n\s*\n\s*", "\n\n", "".join(self.out)).strip()


def python_docs_documents(tar: tarfile.TarFile) -> Iterator[str]:
    for m in sorted(tar.getmembers(), key=lambda m: m.name):
        name = m.name
        if not m.isfile() or not name.endswith(".html") or "/html/" not in name:
            continue
        if re.search(r"/(genindex[^/]*|py-modindex|search|contents|download)\.html$", name):
            continue  # indexes and navigation, no prose
        f = tar.extractfile(m)
        if f is None:
            continue
        parser = _SphinxBody()
        parser.feed(f.read().decode("utf-8", errors="replace"))
        text = parser.text()
        if text:
            yield text


CORPORA = {
    c.name: c for c in (
        RegistryCorpus("chinese-poetry", "npm", "chinese-poetry", "2.0.1", "MIT", "package/LICENSE",
                       chinese_poetry_documents),
        RegistryCorpus("python-docs", "debian", "python3.11-doc", "", "PSF-2.0",
                       "./usr/share/doc/python3.11-doc/copyright", python_docs_documents),
    )
}


# ------------------------------------------------------------------ fetch and measure


def _download(c: RegistryCorpus, tmp: Path) -> tuple[tarfile.TarFile, str]:
    """The package's files as a tar archive and the version fetched, with the registry's own client."""
    if c.registry == "npm":
        out = subprocess.run(["npm", "pack", f"{c.package}@{c.version}", "--pack-destination", str(tmp), "--silent"],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()
        return tarfile.open(tmp / out[-1], "r:gz"), c.version
    got = subprocess.run(["apt-get", "download", c.package], cwd=tmp, capture_output=True, text=True)
    if got.returncode != 0:
        raise RuntimeError(f"apt-get download {c.package} failed (run apt-get update first?): {got.stderr.strip()}")
    deb = next(tmp.glob(f"{c.package}_*.deb"))
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    version = deb.name.split("_")[1].replace("%3a", ":")
    return tarfile.open(fileobj=io.BytesIO(data)), version


def folder(name: str) -> Path:
    c = CORPORA[name]
    return _cache_root() / (f"{c.name}-{c.version}" if c.version else c.name)


def _write_documents(docs: Iterator[str], out: Path) -> int:
    """`docs-NNNN.jsonl.zst` files of DOCS_PER_FILE documents each; returns the number written."""
    n, writer = 0, None
    for doc in docs:
        if n % DOCS_PER_FILE == 0:
            if writer is not None:
                writer.close()
            path = out / f"docs-{n // DOCS_PER_FILE:04d}.jsonl.zst"
            writer = zstandard.ZstdCompressor(level=9).stream_writer(open(path, "wb"))  # noqa: SIM115
        writer.write((json.dumps({"text": doc}, ensure_ascii=False) + "\n").encode("utf-8"))
        n += 1
    if writer is not None:
        writer.close()  # closes the file too
    return n


def fetch(name: str) -> Path:
    """The corpus folder, downloaded and converted on first use; `source.json` marks it complete."""
    if name not in CORPORA:
        raise KeyError(f"corpus: unknown {name!r} (known: {', '.join(sorted(CORPORA))})")
    c, out = CORPORA[name], folder(name)
    if (out / "source.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kiln-corpus-") as tmp:
        tar, version = _download(c, Path(tmp))
        with tar:
            licence = tar.extractfile(c.licence_file)
            (out / "LICENSE").write_bytes(licence.read() if licence else b"")
            n = _write_documents(c.documents(tar), out)
    (out / "source.json").write_text(json.dumps({"registry": c.registry, "package": c.package, "version": version,
                                                 "licence": c.licence, "documents": n}, indent=1))
    return out


def documents(name: str) -> Iterator[str]:
    for path in sorted(fetch(name).glob("docs-*.jsonl.zst")):
        with open(path, "rb") as f:
            for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8"):
                yield json.loads(line)["text"]


def stats(name: str) -> dict[str, float]:
    """Documents and MB before and after kiln's default cleaning and filters (what prepare would keep)."""
    from kiln_api.data_config import CleanSpec, FilterSpec

    from kiln_trainer.data.clean import clean_text
    from kiln_trainer.data.filters import check_quality

    clean, rules = CleanSpec(), FilterSpec()
    cjk = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
    docs = kept = raw_bytes = kept_bytes = kept_cjk = kept_chars = 0
    for text in documents(name):
        docs += 1
        raw_bytes += len(text.encode("utf-8"))
        out = clean_text(text, clean)
        if check_quality(out, rules) is None:
            kept += 1
            kept_bytes += len(out.encode("utf-8"))
            kept_chars += len(out)
            kept_cjk += len(cjk.findall(out))
    return {"documents": docs, "raw_mb": round(raw_bytes / 1e6, 2), "kept_documents": kept,
            "kept_mb": round(kept_bytes / 1e6, 2), "kept_cjk_chars": kept_cjk,
            "kept_cjk_share": round(kept_cjk / max(1, kept_chars), 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kiln_trainer.data.registry_corpus")
    p.add_argument("action", choices=["fetch", "stats"])
    p.add_argument("name", choices=sorted(CORPORA))
    args = p.parse_args(argv)
    if args.action == "fetch":
        print(fetch(args.name))
    else:
        print(json.dumps(stats(args.name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
