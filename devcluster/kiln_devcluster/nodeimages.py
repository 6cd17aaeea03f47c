"""The node-level images every real node gets at `up`: pause, CoreDNS, busybox.

- ``kiln.local/pause`` — the sandbox image containerd's CRI starts for each pod
  (built by devcluster/build.sh from build/pause);
- ``kiln.local/coredns`` — cluster DNS (build.sh, build/coredns);
- ``kiln.local/busybox`` — Debian's busybox-static with its applets and a
  ``nobody`` user: the small image the node tests run (no registry to pull from).

The project's own images (operator, trainer, serving) are built and imported by
``python -m kiln_devcluster.images import --address <socket>``, once per node socket
(``kiln_devcluster.cli sockets``; ``make cluster-images`` does both).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from kiln_devcluster.nodeconfig import PAUSE_IMAGE
from kiln_devcluster.ociimage import Entry, Image

COREDNS_IMAGE = "kiln.local/coredns:v1.14.7"
BUSYBOX_IMAGE = "kiln.local/busybox:1.35"
BUSYBOX_HOST_BINARY = Path("/bin/busybox")
"""From Debian's busybox-static (devcluster/host-deps.sh installs it)."""

_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"


def _binary(host: Path, at: str) -> Entry:
    if not host.is_file():
        raise FileNotFoundError(f"{host} is missing (devcluster/build.sh builds it)")
    return Entry(at, host.read_bytes(), 0o755)


def pause_image(bin_dir: Path) -> Image:
    # Runs as nobody: it needs no privilege to hold namespaces open.
    return Image(PAUSE_IMAGE, (_binary(bin_dir / "pause", "/pause"),),
                 {"Entrypoint": ["/pause"], "User": "65534:65534"})


def coredns_image(bin_dir: Path) -> Image:
    return Image(COREDNS_IMAGE, (_binary(bin_dir / "coredns", "/coredns"),), {"Entrypoint": ["/coredns"]})


def busybox_applets(binary: Path) -> list[str]:
    out = subprocess.run([str(binary), "--list-full"], capture_output=True, text=True, check=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def busybox_image(binary: Path = BUSYBOX_HOST_BINARY) -> Image:
    if not binary.is_file():
        raise FileNotFoundError(f"{binary} is missing: run devcluster/host-deps.sh (Debian package busybox-static)")
    applets = [Entry("/" + path, link="/bin/busybox") for path in busybox_applets(binary) if path != "bin/busybox"]
    entries = (
        Entry("/bin/busybox", binary.read_bytes(), 0o755),
        *applets,
        Entry("/etc/passwd", _PASSWD, 0o644),
        Entry("/etc/group", _GROUP, 0o644),
        Entry("/tmp", None, 0o1777),
        Entry("/root", None, 0o700),
    )
    return Image(BUSYBOX_IMAGE, entries,
                 {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]})


def node_images(bin_dir: Path) -> list[Image]:
    """Every image a fresh node needs before its first pod (pause first: no sandbox without it)."""
    return [pause_image(bin_dir), coredns_image(bin_dir), busybox_image()]
