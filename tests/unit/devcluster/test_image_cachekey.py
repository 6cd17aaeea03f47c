"""Image cache keys: what invalidates which layer, on a tiny build context (no buildah needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln_devcluster.images import cachekey
from kiln_devcluster.images.specs import REPO_ROOT, select

DOCKERFILE = """\
# deps first, code in its own stage
ARG BASE=python:3.11-slim
FROM ${BASE} AS deps
ARG PIP_CERT
COPY requirements.lock ./
RUN install -r requirements.lock \\
    --heavy

FROM deps AS code
COPY src ./src
RUN install --no-deps ./src

FROM ${BASE}
COPY --from=deps /opt/venv /opt/venv
COPY --from=code /opt/code /opt/code
USER 1000
"""


def _context(tmp: Path) -> Path:
    (tmp / "src" / "pkg").mkdir(parents=True)
    (tmp / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp / "requirements.lock").write_text("torch==2.15.0\n")
    (tmp / ".dockerignore").write_text("**/__pycache__\n")
    return tmp


def _keys(ctx: Path, **args: str) -> dict[str, str]:
    return {k.instruction.split()[0] + ":" + k.stage + ":" + str(i): k.key
            for i, k in enumerate(cachekey.layer_keys(DOCKERFILE, ctx, args, {}))}


def _changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [name for name in before if before[name] != after[name]]


def test_a_code_change_changes_only_the_code_layers(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    before = _keys(ctx)
    (ctx / "src" / "pkg" / "mod.py").write_text("x = 2\n")
    changed = _changed(before, _keys(ctx))
    # deps stage and the runtime's copy of it stay; the code stage and what follows it change.
    assert changed == ["COPY:code:5", "RUN:code:6", "COPY:2:9", "USER:2:10"]


def test_a_lock_change_rebuilds_the_dependency_layer(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    before = _keys(ctx)
    (ctx / "requirements.lock").write_text("torch==2.16.0\n")
    changed = _changed(before, _keys(ctx))
    assert changed[:2] == ["COPY:deps:2", "RUN:deps:3"]
    assert "COPY:2:8" in changed and "FROM:deps:0" not in changed and "ARG:deps:1" not in changed


def test_ignored_files_and_file_order_do_not_matter(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    before = _keys(ctx)
    (ctx / "src" / "pkg" / "__pycache__").mkdir()
    (ctx / "src" / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    assert _keys(ctx) == before


def test_a_new_file_or_mode_counts(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    before = _keys(ctx)
    (ctx / "src" / "pkg" / "mod.py").chmod(0o755)
    after_mode = _keys(ctx)
    assert _changed(before, after_mode)[0] == "COPY:code:5"
    (ctx / "src" / "pkg" / "new.py").write_text("")
    assert _changed(after_mode, _keys(ctx))[0] == "COPY:code:5"


def test_build_args_and_base_ids_are_part_of_the_key(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    plain = cachekey.layer_keys(DOCKERFILE, ctx, {}, {})
    local_base = cachekey.layer_keys(DOCKERFILE, ctx, {"BASE": "localhost/b:1"}, {})
    rebuilt_base = cachekey.layer_keys(DOCKERFILE, ctx, {"BASE": "localhost/b:1"}, {"localhost/b:1": "abc"})
    proxy = cachekey.layer_keys(DOCKERFILE, ctx, {"PIP_CERT": "/ca.pem"}, {})
    assert len({cachekey.image_key(k) for k in (plain, local_base, rebuilt_base, proxy)}) == 4
    assert local_base[0].instruction == "FROM localhost/b:1 AS deps"


def test_a_missing_copy_source_names_it(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    (ctx / "requirements.lock").unlink()
    with pytest.raises(FileNotFoundError, match="requirements.lock"):
        cachekey.layer_keys(DOCKERFILE, ctx, {}, {})


def test_parse_joins_continuations_and_drops_comments() -> None:
    parsed = cachekey.parse_dockerfile(DOCKERFILE)
    assert [i.keyword for i in parsed][:4] == ["ARG", "FROM", "ARG", "COPY"]
    assert parsed[4].args.split() == ["install", "-r", "requirements.lock", "--heavy"]


@pytest.mark.parametrize("name", ["operator", "trainer", "serving"])
def test_a_code_change_keeps_the_project_images_dependency_layers(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real Dockerfiles: with every code folder's content changed, the layers that install the
    lock and the runtime's copy of them keep their keys (they are neither rebuilt nor re-imported)."""
    spec = next(s for s in select([name]) if s.name == name)
    text = spec.dockerfile.read_text()
    before = cachekey.layer_keys(text, REPO_ROOT, {}, {})
    real = cachekey.hash_sources

    def code_changed(context: Path, sources: list[str], patterns: list[str]) -> str:
        digest = real(context, sources, patterns)
        code = any(s.split("/")[0] in ("api", "operator", "trainer", "devcluster") for s in sources)
        return digest + "-changed" if code else digest

    monkeypatch.setattr(cachekey, "hash_sources", code_changed)
    after = cachekey.layer_keys(text, REPO_ROOT, {}, {})
    kept = [b.instruction for b, a in zip(before, after, strict=True) if a.key == b.key]
    assert any("requirements.lock" in k and k.startswith("RUN") for k in kept), kept
    # The heavy install runs in the stage that ships (the last one) and before its copy of the code:
    # installed in another stage and copied in, the builder stores it twice.
    parsed = cachekey.parse_dockerfile(text)
    runtime = max(i for i, p in enumerate(parsed) if p.keyword == "FROM")
    code_copy = next(i for i, p in enumerate(parsed) if p.keyword == "COPY" and p.args.startswith("--from="))
    heavy = [i for i, p in enumerate(parsed) if p.keyword == "RUN" and "requirements.lock" in p.args]
    assert any(runtime < i < code_copy for i in heavy), f"images/{name}/Dockerfile: dependencies not installed in the runtime stage"
    assert kept != [b.instruction for b in before], "a code change must change the code layer"
