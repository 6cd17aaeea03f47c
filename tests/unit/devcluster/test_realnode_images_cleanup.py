"""Hand-made OCI images and the `down` clean-up parsers of the real nodes: no cluster."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from kiln_devcluster import nodecleanup
from kiln_devcluster.nodes import NodeSpec
from kiln_devcluster.ociimage import Entry, Image, layer_tar, oci_archive


def _image(content: bytes = b"#!/bin/sh\n") -> Image:
    return Image("kiln.local/t:1", (Entry("/bin/tool", content), Entry("/bin/alias", link="/bin/tool")),
                 {"Entrypoint": ["/bin/tool"]})


def test_archives_are_deterministic_and_change_with_content() -> None:
    assert oci_archive(_image())[0] == oci_archive(_image())[0]
    assert oci_archive(_image())[0] != oci_archive(_image(b"other"))[0]


def test_archive_is_an_oci_layout_naming_the_image() -> None:
    digest, data = oci_archive(_image())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        (desc,) = index["manifests"]
        assert desc["digest"] == digest
        assert desc["annotations"]["io.containerd.image.name"] == "kiln.local/t:1"
        manifest = json.load(tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}"))  # type: ignore[arg-type]
        (layer,) = manifest["layers"]
        assert f"blobs/sha256/{layer['digest'].split(':')[1]}" in tar.getnames()


def test_layer_has_parent_dirs_first_and_keeps_links_and_modes() -> None:
    with tarfile.open(fileobj=io.BytesIO(layer_tar(_image().entries))) as tar:
        members = tar.getmembers()
    assert members[0].name == "bin" and members[0].isdir()
    by_name = {m.name: m for m in members}
    assert by_name["bin/alias"].issym() and by_name["bin/alias"].linkname == "/bin/tool"
    assert by_name["bin/tool"].mode == 0o755 and by_name["bin/tool"].mtime == 0


@pytest.mark.parametrize("bad", [{"path": "rel/path"}, {"path": "/x", "data": b"a", "link": "/y"}])
def test_bad_entries_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="Entry"):
        Entry(**bad)  # type: ignore[arg-type]


def test_mounts_below_a_folder_come_deepest_first_and_decode_spaces(tmp_path: Path) -> None:
    info = "\n".join([
        "36 25 0:32 / /work/x/.kiln/nodes/n0 rw - tmpfs t rw",
        "37 36 0:33 / /work/x/.kiln/nodes/n0/kubelet/pods/a/volumes/v rw - tmpfs t rw",
        "38 36 0:34 / /work/x/.kiln/nodes/n0/with\\040space rw - tmpfs t rw",
        "39 25 0:35 / /work/x/.kiln/nodes/n01 rw - tmpfs t rw",
        "40 25 0:36 / /proc rw - proc p rw",
    ])
    points = nodecleanup.mounts_below(Path("/work/x/.kiln/nodes/n0"), info)
    assert points == ["/work/x/.kiln/nodes/n0/kubelet/pods/a/volumes/v", "/work/x/.kiln/nodes/n0/with space",
                      "/work/x/.kiln/nodes/n0"]


def test_only_our_iptables_chains_and_the_jumps_to_them_are_selected() -> None:
    saved = "\n".join([
        "*nat", ":PREROUTING ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]",
        ":KILN-MASQ - [0:0]", ":DOCKER - [0:0]",
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-A POSTROUTING -j KILN-MASQ", "-A POSTROUTING -j DOCKER",
        "-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-X", "COMMIT",
    ])
    rules, chains = nodecleanup.our_chain_rules(saved)
    assert chains == ["KUBE-SERVICES", "KILN-MASQ"]
    assert rules == [["PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"],
                     ["POSTROUTING", "-j", "KILN-MASQ"]]


def test_cgroup_parents_are_made_with_the_parents_cpuset_and_removed_bottom_up(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    for h in ("cpuset", "memory"):
        (root / h).mkdir(parents=True)
        (root / h / "cgroup.procs").write_text("")
    (root / "cpuset" / "cpuset.cpus").write_text("0-1\n")
    (root / "cpuset" / "cpuset.mems").write_text("0\n")
    node = NodeSpec(index=1, state=tmp_path / "s", cache=tmp_path / "c")
    nodecleanup.ensure_cgroups(node, root)
    assert (root / "cpuset" / "kiln-node-1" / "cpuset.cpus").read_text() == "0-1\n"
    # A plain folder tree stands in for the cgroup fs (where control files vanish with rmdir).
    (root / "cpuset" / "kiln-node-1" / "cpuset.cpus").unlink()
    (root / "cpuset" / "kiln-node-1" / "cpuset.mems").unlink()
    (root / "memory" / "kiln-node-1" / "kubepods" / "pod1").mkdir(parents=True)
    assert len(nodecleanup.cgroup_dirs(node, root)) == 2
    nodecleanup.remove_cgroups(node, root)
    assert nodecleanup.cgroup_dirs(node, root) == []


def test_pod_memory_is_read_from_the_nodes_memory_cgroup(tmp_path: Path) -> None:
    node = NodeSpec(index=0, state=tmp_path / "s", cache=tmp_path / "c")
    assert nodecleanup.pods_rss_mib(node, tmp_path) == 0.0  # no cgroup yet: nothing runs
    stat = tmp_path / "memory" / "kiln-node-0" / "memory.stat"
    stat.parent.mkdir(parents=True)
    stat.write_text("rss 0\ntotal_cache 999\ntotal_rss 10485760\n")
    assert nodecleanup.pods_rss_mib(node, tmp_path) == 10.0
