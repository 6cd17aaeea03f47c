"""Running a command inside a built image, and a private containerd for the import tests.

No cluster. `ImageRunner` runs commands in an image with runc, the runtime the nodes' containerd
uses, on the image's own filesystem (a buildah mount, so nothing is copied or imported): the
image's user, environment and working directory, the root read-only, an empty tmpfs on /tmp
(what a pod with an emptyDir /tmp gets), a network namespace of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kiln_devcluster.images import host
from kiln_devcluster.images.containerd import wait_for_socket


def missing_prerequisites() -> str | None:
    """Why these tests cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root (buildah, runc, containerd)"
    for tool in ("buildah", "runc", "containerd", "ctr"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install buildah containerd)"
    return None


@dataclass(frozen=True)
class Ran:
    rc: int
    output: str


def _uid_gid(user: str, rootfs: Path) -> tuple[int, int]:
    """The image's USER as numbers (names looked up in the image's /etc/passwd); root if unset."""
    name, _, group = (user or "0").partition(":")
    if not name.isdigit():
        for line in (rootfs / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2]), int(group or fields[3])
        raise ValueError(f"USER {user}: no such user in the image")
    return int(name), int(group) if group.isdigit() else int(name)


class ImageRunner:
    """Commands in one image: `with ImageRunner(ref) as img: img.run([...])`."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self._container = ""
        self.rootfs = Path()
        self.config: dict[str, object] = {}

    def __enter__(self) -> ImageRunner:
        name = f"kiln-probe-{uuid.uuid4().hex[:8]}"
        subprocess.run(["buildah", "from", "--pull-never", "--name", name, self.ref],
                       check=True, capture_output=True, text=True)
        self._container = name
        self.rootfs = Path(subprocess.run(["buildah", "mount", name], check=True, capture_output=True,
                                          text=True).stdout.strip())
        inspect = subprocess.run(["buildah", "inspect", "--type", "image", self.ref], check=True,
                                 capture_output=True, text=True).stdout
        self.config = json.loads(inspect)["OCIv1"]["config"]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._container:
            subprocess.run(["buildah", "rm", self._container], capture_output=True)

    def run(self, argv: list[str], *, env: dict[str, str] | None = None,
            mounts: dict[str, str] | None = None, timeout: float = 600) -> Ran:
        """Run `argv` in a fresh container; `mounts` binds host paths (read-only) at container paths."""
        with tempfile.TemporaryDirectory(prefix="kiln-probe-") as bundle:
            subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
            config_path = Path(bundle) / "config.json"
            config = json.loads(config_path.read_text())
            uid, gid = _uid_gid(str(self.config.get("User", "")), self.rootfs)
            image_env = list(self.config.get("Env") or [])  # type: ignore[call-overload]
            config["root"] = {"path": str(self.rootfs), "readonly": True}
            config["hostname"] = "probe"
            config["process"].update(
                terminal=False, args=argv, cwd=self.config.get("WorkingDir") or "/",
                user={"uid": uid, "gid": gid}, noNewPrivileges=True,
                env=image_env + [f"{k}={v}" for k, v in (env or {}).items()])
            config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                     "options": ["nosuid", "nodev", "mode=1777"]})
            for src, dst in (mounts or {}).items():
                config["mounts"].append({"destination": dst, "type": "bind", "source": src,
                                         "options": ["rbind", "ro"]})
            config_path.write_text(json.dumps(config))
            out = subprocess.run(["runc", "run", "--bundle", bundle, f"kiln-probe-{uuid.uuid4().hex[:8]}"],
                                 capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return Ran(out.returncode, out.stdout + out.stderr)


CONTAINERD_CONFIG = """\
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


def root_of(address: str) -> Path:
    """The root folder (content store, snapshots) of the `private_containerd` serving `address`."""
    return Path(tomllib.loads((Path(address).parent / "config.toml").read_text())["root"])


@contextlib.contextmanager
def private_containerd() -> Iterator[str]:
    """A containerd of our own (root and state removed at the end); yields its socket address."""
    work = Path(tempfile.mkdtemp(prefix="contract-containerd-", dir=host.cache_dir()))
    state = Path(tempfile.mkdtemp(prefix="kiln-contract-containerd-", dir="/run"))
    config = state / "config.toml"
    config.write_text(CONTAINERD_CONFIG.format(root=work, state=state))
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
        # Snapshots are overlay mounts only while containers run; none are left after our imports.
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
