"""`make images` on a machine without a usable Docker engine says why, exits 0 and builds nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _make_images(tmp: Path, docker_info_rc: int | None) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the target with a stand-in `docker` that logs its calls (None: no docker at all)."""
    bin_dir, calls = tmp / "bin", tmp / "calls"
    bin_dir.mkdir()
    for tool in ("make", "sh", "echo"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    if docker_info_rc is not None:
        (bin_dir / "docker").write_text(
            f'#!/bin/sh\necho "$*" >> {calls}\n[ "$1" = info ] && exit {docker_info_rc}\nexit 0\n')
        (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": str(bin_dir)}
    out = subprocess.run(["make", "-s", "images"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return out, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize(("info_rc", "why"), [(None, "no docker command"), (1, "cannot reach a Docker engine")])
def test_without_an_engine_nothing_is_built(tmp_path: Path, info_rc: int | None, why: str) -> None:
    out, calls = _make_images(tmp_path, info_rc)
    assert out.returncode == 0, out.stderr
    assert why in out.stdout
    assert not [c for c in calls if c.startswith("build")], calls


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_with_an_engine_every_image_is_built(tmp_path: Path) -> None:
    out, calls = _make_images(tmp_path, 0)
    assert out.returncode == 0, out.stderr
    builds = [c for c in calls if c.startswith("build")]
    assert [b.split()[2] for b in builds] == ["kiln/operator:dev", "kiln/trainer:dev", "kiln/serving:dev"]
