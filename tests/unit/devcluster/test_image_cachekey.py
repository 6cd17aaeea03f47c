"""Image cache keys: what invalidates which layer, on a tiny build context (no buildah needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln_devcluster.images import cachekey
from kiln_devcluster.images.specs import REPO_ROOT, select

DOCKERFILE = """\
# deps first, code last
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
ARG PIP_CERT
COPY requirements.lock ./
RUN install -r requirements.lock \\
    --heavy
COPY src ./src
RUN install --no-deps ./src

FROM ${BASE}
COPY --from=build /opt /opt
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
    # build stage: FROM, ARG, COPY lock, RUN deps stay; COPY src, RUN --no-deps change; the
    # runtime stage copies from the build stage, so its layers follow it.
    assert changed == ["COPY:build:4", "RUN:build:5", "COPY:1:7", "USER:1:8"]


def test_a_lock_change_rebuilds_the_dependency_layer(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    before = _keys(ctx)
    (ctx / "requirements.lock").write_text("torch==2.16.0\n")
    changed = _changed(before, _keys(ctx))
    assert changed[:2] == ["COPY:build:2", "RUN:build:3"]
    assert "FROM:build:0" not in changed and "ARG:build:1" not in changed


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
    assert _changed(before, after_mode)[0] == "COPY:build:4"
    (ctx / "src" / "pkg" / "new.py").write_text("")
    assert _changed(after_mode, _keys(ctx))[0] == "COPY:build:4"


def test_build_args_and_base_ids_are_part_of_the_key(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    plain = cachekey.layer_keys(DOCKERFILE, ctx, {}, {})
    local_base = cachekey.layer_keys(DOCKERFILE, ctx, {"BASE": "localhost/b:1"}, {})
    rebuilt_base = cachekey.layer_keys(DOCKERFILE, ctx, {"BASE": "localhost/b:1"}, {"localhost/b:1": "abc"})
    proxy = cachekey.layer_keys(DOCKERFILE, ctx, {"PIP_CERT": "/ca.pem"}, {})
    assert len({cachekey.image_key(k) for k in (plain, local_base, rebuilt_base, proxy)}) == 4
    assert local_base[0].instruction == "FROM localhost/b:1 AS build"


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
def test_project_images_keep_the_code_out_of_the_dependency_layer(name: str) -> None:
    """The real Dockerfiles: the layer that installs the lock comes before any code is copied."""
    spec = next(s for s in select([name]) if s.name == name)
    parsed = cachekey.parse_dockerfile(spec.dockerfile.read_text())
    texts = [f"{i.keyword} {i.args}" for i in parsed]
    deps = next(n for n, t in enumerate(texts) if t.startswith("RUN") and "requirements.lock" in t)
    code = next(n for n, t in enumerate(texts) if t.startswith("COPY api"))
    assert deps < code, f"images/{name}/Dockerfile installs the lock after copying code"
    assert spec.dockerfile.is_relative_to(REPO_ROOT / "images")
