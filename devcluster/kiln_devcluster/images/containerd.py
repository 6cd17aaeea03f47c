"""Hand the built images to a containerd (no registry), moving only the layers it lacks.

`import_images(built, address)` is what `cluster up` calls for each node's containerd:

1. export: the image read from buildah's store into an OCI layout kept in the cache (layout.py,
   storage.py); a layer the layout already holds (torch's) is not written or compressed again.
2. import: a tar of that layout holding the manifest, the config and only the layers this
   containerd does not have yet (`ctr content ls`), named by the `io.containerd.image.name`
   annotation, streamed into `ctr images import -` (no archive file on disk). After a code change that is the thin code layer.
3. the imported image is labelled with its buildah id; an image already there with this label
   is not imported again.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
from pathlib import Path
from typing import IO

from kiln_devcluster.images import host, share
from kiln_devcluster.images.build import Built
from kiln_devcluster.images.layout import blob_path, current_manifest, keep_current, write_layout
from kiln_devcluster.images.progress import CommandFailed, run, step
from kiln_devcluster.images.storage import Store

NAMESPACE = "k8s.io"
"""The namespace the kubelet's CRI plugin reads images from."""
ID_LABEL = "kiln.dev/image-id"


def image_size(ref: str) -> int:
    """Bytes of the local image `ref` (uncompressed layers), as buildah reports them."""
    out = run(["buildah", "images", "--noheading", "--format", "{{.Size}}", ref]).split("\n")[0].strip()
    number, _, unit = out.partition(" ")
    scale = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}.get(unit.strip(), 1)
    return int(float(number) * scale)


def full_name(ref: str) -> str:
    """containerd names images in full: busybox:1 is docker.io/library/busybox:1."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if "/" in ref else f"docker.io/library/{ref}"


def layout_dir(built: Built) -> Path:
    return host.cache_dir() / "oci" / built.name


def export_layout(built: Built) -> dict[str, object]:
    """Write the image into its OCI layout from buildah's store (storage.py): the layers the
    layout lacks, its config and manifest; returns the manifest descriptor."""
    layout = layout_dir(built)
    id_file = layout / "kiln-image-id"
    if not (id_file.exists() and id_file.read_text() == built.image_id):
        with step(f"export {built.name} ({built.ref}) to {layout}"):
            write_layout(Store.buildah(), built.image_id, layout)
            id_file.write_text(built.image_id)
    keep_current(layout)
    return current_manifest(layout)


def config_digest(built: Built) -> str:
    """The image id (``sha256:…`` of its config) a container of this build reports as imageID."""
    layout = layout_dir(built)
    manifest = json.loads(blob_path(layout, str(export_layout(built)["digest"])).read_text())
    return str(manifest["config"]["digest"])


def write_thin_archive(built: Built, descriptor: dict[str, object], have: set[str], out: IO[bytes]) -> int:
    """Stream an OCI archive of the image without the layers in `have` to `out`; returns the
    number of layers it holds. Streamed, so no archive-sized file is written."""
    layout = layout_dir(built)
    manifest = json.loads(blob_path(layout, str(descriptor["digest"])).read_text())
    needed = [str(descriptor["digest"]), manifest["config"]["digest"]]
    needed += [la["digest"] for la in manifest["layers"] if la["digest"] not in have]
    named = {**descriptor, "annotations": {**dict(descriptor.get("annotations") or {}),  # type: ignore[call-overload]
                                           "io.containerd.image.name": full_name(built.ref)}}
    index = json.dumps({"schemaVersion": 2, "manifests": [named]}).encode()
    with tarfile.open(fileobj=out, mode="w|") as tar:
        _add_bytes(tar, "oci-layout", (layout / "oci-layout").read_bytes())
        _add_bytes(tar, "index.json", index)
        for digest in needed:
            tar.add(blob_path(layout, digest), arcname=f"blobs/{digest.replace(':', '/')}")
    return len(needed) - 2


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _ctr(address: str, namespace: str, *args: str) -> str:
    return run(["ctr", "--address", address, "--namespace", namespace, *args])


def has_image(address: str, namespace: str, built: Built, manifest_digest: str) -> bool:
    """Whether that containerd already holds this exact build of `built.ref`: its name points at
    the layout's current manifest (the label alone once vouched for a stale manifest)."""
    out = _ctr(address, namespace, "images", "ls", f"name=={full_name(built.ref)}")
    return f"{ID_LABEL}={built.image_id}" in out and manifest_digest in out


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


def import_images(built: list[Built], address: str, namespace: str = NAMESPACE) -> list[Built]:
    """Import every image of `built` that this containerd lacks (labelled with its build id);
    returns those it imported."""
    wait_for_socket(address)
    imported = []
    for b in built:
        descriptor = export_layout(b)
        if has_image(address, namespace, b, str(descriptor["digest"])):
            print(f"[images] {b.name}: already in {address} ({namespace})", flush=True)
            continue
        have = set(_ctr(address, namespace, "content", "ls", "--quiet").split())
        with step(f"import {b.name} into {address} ({namespace})"):
            proc = subprocess.Popen(["ctr", "--address", address, "--namespace", namespace, "images", "import", "-"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert proc.stdin is not None and proc.stdout is not None
            try:
                layers = write_thin_archive(b, descriptor, have, proc.stdin)
            finally:
                proc.stdin.close()
            output = proc.stdout.read().decode(errors="replace")
            if proc.wait() != 0:
                raise CommandFailed(f"ctr images import ({b.ref}) exited {proc.returncode}:\n{output[-3000:]}")
            print(f"[images]   {layers} new layer(s) of {b.name} sent", flush=True)
            _ctr(address, namespace, "images", "label", full_name(b.ref), f"{ID_LABEL}={b.image_id}")
        imported.append(b)
    return imported


def import_into_nodes(built: list[Built], nodes: list[tuple[str, Path]], namespace: str = NAMESPACE) -> None:
    """Import `built` into every node, given as (containerd address, containerd root), keeping
    one copy of the bytes on disk: each imported image's blobs are linked to its OCI layout, and
    on the nodes after the first its unpacked layers to the first node's (share.py)."""
    first = nodes[0][0]
    for address, root in nodes:
        # One image at a time, shared before the next comes: the disk holds one extra copy at most.
        for b in (b for one in built for b in import_images([one], address, namespace)):
            with step(f"share {b.name}'s bytes in {root}"):
                layout = layout_dir(b)
                manifest = json.loads(blob_path(layout, export_layout(b)["digest"]).read_text())  # type: ignore[arg-type]
                digests = [manifest["config"]["digest"], *(la["digest"] for la in manifest["layers"])]
                freed = share.share_blobs(layout / "blobs", root / "io.containerd.content.v1.content" / "blobs", digests)
                if address != first:
                    config = json.loads(blob_path(layout, manifest["config"]["digest"]).read_text())
                    chain = share.chain_ids(config["rootfs"]["diff_ids"])
                    freed += share.share_layers((first, namespace), (address, namespace), chain)
                print(f"[images]   {freed / 1e9:.2f} GB freed by hard links", flush=True)
