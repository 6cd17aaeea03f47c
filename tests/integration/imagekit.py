"""A private containerd for the image contract tests, and running a command inside an image.

No cluster: the images are built (or found unchanged) by `kiln_devcluster.images`, imported into a
containerd of the test's own (its content kept under the images cache, so unchanged images are not
imported again) and run with `ctr run`: as the image's own user, root filesystem read-only, an
empty tmpfs on /tmp (what a pod with an emptyDir /tmp gets).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kiln_devcluster.images import host
from kiln_devcluster.images.containerd import NAMESPACE, wait_for_socket

CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
# Only images and containers: no CRI (that is the kubelet's business, not this test's).
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{state}/containerd.sock"
[ttrpc]
  address = "{state}/containerd.sock.ttrpc"
"""


def missing_prerequisites() -> str | None:
    """Why these tests cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root (buildah, containerd)"
    for tool in ("buildah", "containerd", "ctr"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install buildah containerd)"
    return None


@contextlib.contextmanager
def private_containerd() -> Iterator[str]:
    """Start a containerd of our own; yield its socket address; stop it at the end."""
    root = host.cache_dir() / "contract-containerd"
    state = Path(f"/run/kiln-contract-containerd-{os.getpid()}")
    state.mkdir(parents=True, exist_ok=True)
    config = state / "config.toml"
    config.write_text(CONFIG.format(root=root, state=state))
    log = open(state / "containerd.log", "wb")  # noqa: SIM115 - closed after the process ends
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    address = str(state / "containerd.sock")
    try:
        wait_for_socket(address, deadline_s=60)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(state, ignore_errors=True)


@dataclass(frozen=True)
class Ran:
    rc: int
    output: str


def run_in_image(address: str, ref: str, argv: list[str], *, env: dict[str, str] | None = None,
                 mounts: dict[str, str] | None = None, timeout: float = 300, net_host: bool = False) -> Ran:
    """Run `argv` in a fresh container of `ref`: image user, read-only root, tmpfs /tmp.

    `mounts` maps host paths to container paths (bound read-only).
    """
    cmd = ["ctr", "--address", address, "--namespace", NAMESPACE, "run", "--rm", "--read-only",
           "--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=nosuid:nodev:mode=1777"]
    for src, dst in (mounts or {}).items():
        cmd += ["--mount", f"type=bind,src={src},dst={dst},options=rbind:ro"]
    for key, value in (env or {}).items():
        cmd += ["--env", f"{key}={value}"]
    if net_host:
        cmd.append("--net-host")
    cmd += [ref, f"kiln-probe-{uuid.uuid4().hex[:8]}", *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return Ran(out.returncode, out.stdout + out.stderr)

