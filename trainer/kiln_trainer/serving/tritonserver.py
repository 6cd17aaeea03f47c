"""Start the real `tritonserver` binary shipped in the `nvidia-pytriton` wheel.

Two layers:

* `triton_launch_spec(...)` is pure (standard library only, no kiln imports) so that the devcluster
  node helper can reuse it: it builds the python-backend folder (pytriton's backend files plus the
  stub built for this Python) and returns the command line and the environment.
* Without `nvidia-pytriton` (the serving image), the Triton image's own server is used: NVIDIA's
  layout under /opt/tritonserver, whose backends folder already holds the python backend and stub.
* `TritonProcess` is a context manager for tests and benches: it starts the binary, waits for
  `/v2/health/ready` with a deadline, and stops the process (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class TritonLaunchError(RuntimeError):
    """The server could not be started or did not become ready in time."""


SYSTEM_TRITON = Path("/opt/tritonserver")
"""Where NVIDIA's Triton images (and the dev cluster's stand-in for them) install tritonserver."""


def _use_system_triton() -> bool:
    """No pytriton here, but a Triton image's server: serve with that one."""
    import importlib.util

    return importlib.util.find_spec("pytriton") is None and (SYSTEM_TRITON / "bin" / "tritonserver").exists()


def pytriton_root() -> Path:
    """The installed `pytriton` package folder (found without importing pytriton itself)."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonLaunchError("the nvidia-pytriton package (which ships tritonserver) is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def build_backend_dir(target: Path, python_version: str | None = None) -> Path:
    """Create `<target>/python/` with pytriton's python backend and the matching stub; returns `target`.

    The stub must match the interpreter whose packages the model imports, hence the version pick.
    Idempotent: an existing complete folder is reused.
    """
    if _use_system_triton():  # the image's backends folder is complete (and read-only)
        return SYSTEM_TRITON / "backends"
    version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    python_dir = target / "python"
    stub_dst = python_dir / "triton_python_backend_stub"
    if stub_dst.exists():
        return target
    root = pytriton_root() / "tritonserver"
    stub_src = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub_src.exists():
        raise TritonLaunchError(f"no python backend stub for Python {version} at {stub_src}")
    python_dir.mkdir(parents=True, exist_ok=True)
    for item in (root / "backends" / "python").iterdir():
        shutil.copy2(item, python_dir / item.name)
    # Copy last and atomically: its presence marks the folder complete for later calls.
    tmp = python_dir / ".stub.tmp"
    shutil.copy2(stub_src, tmp)
    os.replace(tmp, stub_dst)
    return target


@dataclass(frozen=True)
class LaunchSpec:
    """What to exec: the argv and the full environment."""

    argv: list[str]
    env: dict[str, str]


def triton_launch_spec(
    repository: str,
    backend_dir: Path,
    *,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    load_models: Sequence[str] = (),
    explicit: bool = True,
    base_env: Mapping[str, str] | None = None,
    venv_bin: Path | None = None,
    extra_args: Sequence[str] = (),
) -> LaunchSpec:
    """The tritonserver command line and environment (pure apart from locating pytriton).

    `repository` is a local path or `s3://http://host:port/bucket/path`. With `explicit`, only
    `load_models` are loaded at start and others through the repository API.
    """
    system = _use_system_triton()
    root = SYSTEM_TRITON if system else pytriton_root()
    binary = root / "bin" / "tritonserver" if system else root / "tritonserver" / "bin" / "tritonserver"
    argv = [
        str(binary),
        f"--model-repository={repository}",
        f"--backend-directory={backend_dir}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        "--allow-http=true",
        "--allow-grpc=true",
        "--allow-metrics=true",
        "--log-verbose=0",
        # Each python-backend stub exchanges tensors with the server through shared memory; start
        # with 4 MiB so ordinary requests never wait for the region to grow.
        "--backend-config=python,shm-default-byte-size=4194304",
    ]
    if explicit:
        argv.append("--model-control-mode=explicit")
        argv.extend(f"--load-model={m}" for m in load_models)
    argv.extend(extra_args)
    env = dict(os.environ if base_env is None else base_env)
    if not system:  # a Triton image's own environment already points at its libraries
        libs = root.parent / "nvidia_pytriton.libs"
        if not libs.is_dir():  # editable pytriton installs keep the libraries here instead
            libs = root / "tritonserver" / "external_libs"
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (env.get("LD_LIBRARY_PATH", ""), str(libs)) if p)
    # The stub runs `python` semantics from PATH: the venv must come first to find torch & co.
    bin_dir = venv_bin or Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    return LaunchSpec(argv=argv, env=env)


def wait_ready(url: str, deadline_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers 200; raise naming the URL if the deadline passes or `proc` exits."""
    end = time.monotonic() + deadline_s
    delay = 0.05
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise TritonLaunchError(f"tritonserver exited with code {proc.returncode} before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise TritonLaunchError(f"{url} not ready within {deadline_s:.0f}s")


def free_port() -> int:
    """An unused TCP port on loopback (the OS picks it)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TritonProcess:
    """`with TritonProcess(repo) as t:` runs tritonserver until the block ends.

    Ports default to free ones; `env` adds to (and overrides) the current environment, e.g. the
    AWS_* settings for an s3:// repository. The server log is kept at `log_path`.
    """

    repo: str
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    load_models: Sequence[str] = ()
    explicit: bool = True
    ready_timeout_s: float = 120.0
    work_dir: Path | None = None
    extra_args: Sequence[str] = ()
    """More tritonserver flags (e.g. the restricted-API ones)."""
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / "tritonserver.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> TritonProcess:
        if self.work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kiln-triton-")
            self.work_dir = Path(self._tmp.name)
        self.http_port = self.http_port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        backends = build_backend_dir(self.work_dir / "backends")
        spec = triton_launch_spec(
            self.repo,
            backends,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            load_models=self.load_models,
            explicit=self.explicit,
            base_env={**os.environ, **self.env},
            extra_args=self.extra_args,
        )
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process in __exit__
        self._proc = subprocess.Popen(spec.argv, env=spec.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_ready(f"http://{self.http_url}/v2/health/ready", self.ready_timeout_s, self._proc)
        except BaseException as e:
            tail = self.log_text()[-4000:]
            self.__exit__(None, None, None)
            raise TritonLaunchError(f"{e}\n--- tritonserver log ---\n{tail}") from e
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None
            self.work_dir = None
