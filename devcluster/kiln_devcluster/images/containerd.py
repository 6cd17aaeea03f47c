"""Hand the built images to a containerd (no registry): archive once, import per node.

`import_images(built, address)` is what `cluster up` calls for each node's containerd. An image
is exported from buildah's storage once per image id (a docker-archive: uncompressed layers, so
no compression pass over torch), and imported only when that containerd does not already hold
this exact build: each import labels the image with its buildah id, and the label is checked first.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from kiln_devcluster.images import host
from kiln_devcluster.images.build import Built
from kiln_devcluster.images.progress import CommandFailed, run, step

NAMESPACE = "k8s.io"
"""The namespace the kubelet's CRI plugin reads images from."""
ID_LABEL = "kiln.dev/image-id"


def image_size(ref: str) -> int:
    """Bytes of the local image `ref` (uncompressed layers), as buildah reports them."""
    out = run(["buildah", "images", "--noheading", "--format", "{{.Size}}", ref]).split("\n")[0].strip()
    return _parse_size(out)


def _parse_size(text: str) -> int:
    """buildah's human size ("6.31 GB", "512 MB") in bytes."""
    number, _, unit = text.partition(" ")
    scale = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}.get(unit.strip(), 1)
    return int(float(number) * scale)


def archive(built: Built) -> Path:
    """A docker-archive of the image, rewritten only when the image id changed."""
    folder = host.cache_dir() / "archives"
    path = folder / f"{built.name}.tar"
    id_file = folder / f"{built.name}.id"
    if path.exists() and id_file.exists() and id_file.read_text() == built.image_id:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{built.name}.tar.partial"
    partial.unlink(missing_ok=True)
    with step(f"export {built.name} ({built.ref}) to {path.name}"):
        run(["buildah", "push", "--quiet", built.ref, f"docker-archive:{partial}:{built.ref}"])
        os.replace(partial, path)
        id_file.write_text(built.image_id)
    return path


def _ctr(address: str, namespace: str, *args: str) -> str:
    return run(["ctr", "--address", address, "--namespace", namespace, *args])


def has_image(address: str, namespace: str, built: Built) -> bool:
    """Whether that containerd already holds this exact build of `built.ref`."""
    out = _ctr(address, namespace, "images", "ls", f"name=={_full_name(built.ref)}")
    return f"{ID_LABEL}={built.image_id}" in out


def _full_name(ref: str) -> str:
    """containerd names images in full: busybox:1 is docker.io/library/busybox:1."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if "/" in ref else f"docker.io/library/{ref}"


def wait_for_socket(address: str, deadline_s: float = 30.0) -> None:
    """Until containerd answers on `address`; a clear error naming it when it never does."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            _ctr(address, NAMESPACE, "version")
            return
        except CommandFailed as e:
            if time.monotonic() > end:
                raise CommandFailed(f"--address {address}: containerd does not answer: {e}") from e
        time.sleep(0.2)


def import_images(built: list[Built], address: str, namespace: str = NAMESPACE) -> None:
    """Import every image of `built` that this containerd lacks (labelled with its build id)."""
    wait_for_socket(address)
    for b in built:
        if has_image(address, namespace, b):
            print(f"[images] {b.name}: already in {address} ({namespace})", flush=True)
            continue
        path = archive(b)
        with step(f"import {b.name} into {address} ({namespace})"):
            _ctr(address, namespace, "images", "import", str(path))
            _ctr(address, namespace, "images", "label", _full_name(b.ref), f"{ID_LABEL}={b.image_id}")
