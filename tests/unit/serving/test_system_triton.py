"""Without nvidia-pytriton (the serving image), `kiln-trainer serve` uses the Triton image's server."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from kiln_trainer.serving import tritonserver as ts


@pytest.fixture()
def triton_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NVIDIA's layout under a temporary /opt/tritonserver, and no pytriton package."""
    root = tmp_path / "opt" / "tritonserver"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tritonserver").write_text("#!/bin/sh\n")
    (root / "backends" / "python").mkdir(parents=True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(ts, "SYSTEM_TRITON", root)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pytriton" else real_find_spec(name, *a))
    return root


def test_the_image_server_and_backends_are_used(triton_image: Path, tmp_path: Path) -> None:
    backends = ts.build_backend_dir(tmp_path / "work" / "backends")
    assert backends == triton_image / "backends"
    assert not (tmp_path / "work").exists(), "nothing is copied: the image's folder is complete"
    spec = ts.triton_launch_spec("/models", backends, http_port=1, grpc_port=2, metrics_port=3,
                                 base_env={"LD_LIBRARY_PATH": "/opt/tritonserver/lib", "PATH": "/usr/bin"})
    assert spec.argv[0] == str(triton_image / "bin" / "tritonserver")
    assert f"--backend-directory={triton_image / 'backends'}" in spec.argv
    assert spec.env["LD_LIBRARY_PATH"] == "/opt/tritonserver/lib"


def test_pytriton_wins_where_it_is_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton is not installed here")
    root = tmp_path / "opt" / "tritonserver"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tritonserver").write_text("")
    monkeypatch.setattr(ts, "SYSTEM_TRITON", root)
    spec = ts.triton_launch_spec("/models", tmp_path, http_port=1, grpc_port=2, metrics_port=3, base_env={})
    assert spec.argv[0] == str(ts.pytriton_root() / "tritonserver" / "bin" / "tritonserver")
