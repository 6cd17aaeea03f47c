"""Fixtures of the reliability suite.

Each test records its figure through ``figure(...)``; the figures are printed together at the end of
the session (pytest captures test output, the terminal summary is always shown). Tests that need the
embedded cluster reuse tests/integration's session fixtures (``cluster``, ``s3_bucket``, ...),
loaded from that conftest under another module name, so both folders share one definition.
"""

from __future__ import annotations

import importlib.util
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))  # clusterlib, operatorkit, waiting, nodekit
sys.path.insert(0, str(REPO / "tests" / "unit" / "train"))  # trainkit

_spec = importlib.util.spec_from_file_location("integration_conftest", REPO / "tests" / "integration" / "conftest.py")
assert _spec and _spec.loader
_integration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_integration)
cluster = _integration.cluster
s3_bucket = _integration.s3_bucket
s3_identity = _integration.s3_identity

_FIGURES: list[str] = []


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """figure("R7 ...: 0 partial loads in 60 kills") — printed in the session's summary."""

    def record(text: str) -> None:
        _FIGURES.append(f"{request.node.name}: {text}")
        print(text)

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    if _FIGURES:
        terminalreporter.section("reliability figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def text_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled English + Chinese stories as UTF-8 byte tokens (as tests/unit/train uses)."""
    from kiln_trainer.train.data import bundled_documents, write_byte_dataset

    folder = tmp_path_factory.mktemp("text-data")
    write_byte_dataset(folder, bundled_documents())
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private versitygw (the dev cluster's S3 server, no cluster needed) on a free port, with its
    data in tmp_path. Yields boto3-style settings: endpoint_url, access_key, secret_key."""
    from kiln_devcluster import s3server
    from kiln_devcluster.paths import bin_dir
    from waiting import wait_for

    binary = bin_dir() / s3server.BINARY
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `devcluster/build.sh versitygw` (make cluster-build)")
    layout = s3server.Layout(tmp_path / "s3")
    layout.ensure()
    port, secret = _free_port(), secrets.token_hex(12)
    log = (tmp_path / "s3.log").open("w")
    proc = subprocess.Popen(s3server.argv(binary, layout, port, "kiln-root", secret), stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: s3server.serving(endpoint), 30, "private versitygw serving")
        yield {"endpoint_url": endpoint, "access_key": "kiln-root", "secret_key": secret}
    finally:
        proc.kill()
        proc.wait()
        log.close()
