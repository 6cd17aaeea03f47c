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

import boto3
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
s3_module_bucket = _integration.s3_module_bucket

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


class PrivateS3:
    """A private versitygw (the dev cluster's S3 server, no cluster needed) on a free port with its data
    in a temp folder; `stop()` and `start()` make an outage (the data stays on disk meanwhile)."""

    def __init__(self, binary: Path, folder: Path) -> None:
        from kiln_devcluster import s3server

        self.layout = s3server.Layout(folder)
        self.layout.ensure()
        self.binary, self.port = binary, _free_port()
        self.access_key, self.secret_key = "kiln-root", secrets.token_hex(12)
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from kiln_devcluster import s3server
        from waiting import wait_for

        with self.log.open("ab") as out:
            argv = s3server.argv(self.binary, self.layout, self.port, self.access_key, self.secret_key)
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out)
        wait_for(lambda: s3server.serving(self.endpoint_url), 30, "private versitygw serving")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def env(self) -> dict[str, str]:
        """What kiln's S3 store reads its endpoint and credentials from."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateS3]:
    """A running PrivateS3, with this process's AWS_* environment pointing at it."""
    from kiln_devcluster import s3server
    from kiln_devcluster.paths import bin_dir

    binary = bin_dir() / s3server.BINARY
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `devcluster/build.sh versitygw` (make cluster-build)")
    server = PrivateS3(binary, tmp_path / "s3")
    server.start()
    for var, value in server.env().items():
        monkeypatch.setenv(var, value)
    # boto3's default session keeps the first credentials it resolved: without a fresh one, a test
    # after another test's private server signs with that server's (random) secret.
    boto3.setup_default_session()
    try:
        yield server
    finally:
        server.stop()
        boto3.DEFAULT_SESSION = None
