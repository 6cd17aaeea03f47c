"""The image contract: what the operator's pods run, run inside the project's built images.

No cluster. The images are built from images/*/Dockerfile on the dev-cluster bases (skipped when
unchanged) and run with runc (the nodes' runtime) as their own non-root user with a read-only root
filesystem; the import into a containerd is checked on the (smallest) operator image. The commands come from the operator's own builders (training
Jobs for the tiny example, serving/canary Deployments and the gate Job), so a pod command the
operator starts using, or an image a builder starts naming, is checked without editing this file.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from imagekit import ImageRunner, Ran, missing_prerequisites, private_containerd, root_of
from kiln_devcluster.images.build import Built, build_all
from kiln_devcluster.images.containerd import (
    ID_LABEL,
    NAMESPACE,
    blob_path,
    export_layout,
    import_images,
    import_into_nodes,
    layout_dir,
)
from kiln_devcluster.images.share import chain_ids, layer_dirs
from kiln_devcluster.images.specs import select

REPO = Path(__file__).resolve().parents[2]
PROBES = Path(__file__).parent / "image_probes"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing_prerequisites() is not None,
                                                   reason=missing_prerequisites() or "")]


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    templates = [r["template"] for r in spec.get("pytorchReplicaSpecs", {}).values()]
    if "template" in spec:
        templates.append(spec["template"])
    return [c for t in templates for c in t["spec"].get("containers", [])]


def pod_commands() -> list[tuple[str, str, tuple[str, ...]]]:
    """(what, image, command) of every container the operator's builders create for the tiny run."""
    from kiln_api.trainingrun import parse_spec
    from kiln_operator.builders.common import Run
    from kiln_operator.builders.export_job import build_export_job
    from kiln_operator.builders.indexed_job import build_indexed_job
    from kiln_operator.builders.prepare_job import build_prepare_job
    from kiln_operator.builders.pytorchjob import build_pytorchjob
    from kiln_operator.rollout import SERVING_IMAGE
    from kiln_operator.serving import builders as sb

    spec = parse_spec(yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())["spec"])
    run = Run(name="tiny", namespace="ns", uid="00000000-0000-0000-0000-000000000001", spec=spec)
    target = sb.ServingTarget(name="chat", namespace="ns", model="tiny", repository="s3://b/models",
                              endpoint="http://s3:9000", secret="s3", image=SERVING_IMAGE)
    objects = {
        "prepare": build_prepare_job(run), "train (PyTorchJob)": build_pytorchjob(run),
        "train (Indexed Job)": build_indexed_job(run), "export": build_export_job(run),
        "serving": sb.build_serving_deployment(target), "canary": sb.build_canary_deployment(target, 1, "tiny"),
        "gate": sb.build_gate_job(target, run="tiny", version=1, canary_url="c:8000", prompts=["x"],
                                  max_latency_ms=100, trainer_image=spec.image),
    }
    out = []
    for what, obj in objects.items():
        for c in _containers(obj):
            out.append((f"{what}/{c['name']}", c["image"], tuple(c.get("command") or ())))
    return list(dict.fromkeys(out))  # a PyTorchJob's Master and Worker run the same command


class Images:
    """The project's images, each built (or found unchanged) on first use, by ref or by name."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self._runners: dict[str, ImageRunner] = {}
        self.refs = {s.ref: s.name for s in select(["operator", "trainer", "serving"]) if s.product}

    def __getitem__(self, ref: str) -> ImageRunner:
        if ref not in self._runners:
            specs = select([self.refs[ref]])
            build_all(specs)
            self._runners[ref] = self._stack.enter_context(ImageRunner(ref))
        return self._runners[ref]

    def named(self, name: str) -> ImageRunner:
        return self[next(ref for ref, n in self.refs.items() if n == name)]


@pytest.fixture(scope="module")
def images() -> Iterator[Images]:
    with contextlib.ExitStack() as stack:
        yield Images(stack)


def _probe(img: ImageRunner, script: str, *args: str, env: dict[str, str] | None = None) -> Ran:
    return img.run(["python3", f"/probes/{script}", *args], mounts={str(PROBES): "/probes"}, env=env)


PODS = pod_commands()


@pytest.mark.parametrize(("what", "image", "command"), PODS, ids=[what for what, _, _ in PODS])
def test_each_pod_command_runs_in_its_image(images: Images, what: str, image: str,
                                            command: tuple[str, ...]) -> None:
    assert image in images.refs, f"{what} runs image {image}, which the project does not build ({sorted(images.refs)})"
    assert command[:1] == ("kiln-trainer",), f"{what}: unexpected command {command} (teach this test about it)"
    helped = images[image].run([*command[:2], "--help"])
    assert helped.rc == 0 and "usage:" in helped.output, f"{what}: {' '.join(command[:2])} --help:\n{helped.output}"
    imported = _probe(images[image], "subcommand_modules.py", command[1])
    assert imported.rc == 0, f"{what}: the module behind `{' '.join(command[:2])}` does not import:\n{imported.output}"


def test_images_run_as_their_non_root_user_on_a_read_only_root(images: Images) -> None:
    check = "import os; print(os.getuid()); open('/opt/probe', 'w')"
    for ref in images.refs:
        out = images[ref].run(["python3", "-c", check])
        uid = out.output.split()[0] if out.output else ""
        assert uid.isdigit() and int(uid) > 0, f"{ref} runs as uid {uid!r}:\n{out.output}"
        assert out.rc != 0 and "Read-only file system" in out.output, f"{ref}: the root was writable"


def test_trainer_has_cpu_adam_prebuilt(images: Images) -> None:
    out = _probe(images.named("trainer"), "cpu_adam.py", env={"DS_ACCELERATOR": "cpu"})
    assert out.rc == 0 and "ok cpu_adam" in out.output, out.output


def test_serving_image_imports_everything_the_triton_model_imports(images: Images) -> None:
    out = _probe(images.named("serving"), "model_imports.py")
    assert out.rc == 0 and "ok numpy" in out.output, out.output


def test_serving_image_runs_a_python_backend_model(images: Images) -> None:
    out = _probe(images.named("serving"), "triton_probe.py")
    assert out.rc == 0 and "ok triton" in out.output, out.output


def test_operator_entrypoint_starts(images: Images) -> None:
    # The chart runs the image's ENTRYPOINT (kiln-operator), which has kopf import these modules.
    check = "import shutil, kopf, kiln_operator.handlers, kiln_operator.main; print(shutil.which('kiln-operator'))"
    out = images.named("operator").run(["python3", "-c", check])
    assert out.rc == 0 and "/kiln-operator" in out.output, out.output


def test_import_into_containerd_runs_there_and_is_skipped_when_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    specs = select(["operator"])
    built: list[Built] = [b for b, s in zip(build_all(specs), specs, strict=True) if s.product]
    with private_containerd() as address:
        import_images(built, address)
        first = capsys.readouterr().out
        assert "new layer(s) of operator sent" in first, first
        ctr = ["ctr", "--address", address, "--namespace", NAMESPACE]
        listed = subprocess.run([*ctr, "images", "ls"], capture_output=True, text=True, check=True).stdout
        assert f"{ID_LABEL}={built[0].image_id}" in listed, listed
        # As the kubelet would: a container from the imported image, its user, read-only root.
        ran = subprocess.run([*ctr, "run", "--rm", "--read-only", built[0].ref, "import-probe", "python3", "-c",
                              "import os, kiln_operator.main; print('uid', os.getuid())"],
                             capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0 and "uid 10001" in ran.stdout, ran.stdout + ran.stderr
        import_images(built, address)
        assert "already in" in capsys.readouterr().out


def _regular_files(top: Path) -> dict[Path, int]:
    return {p.relative_to(top): p.stat().st_ino for p in top.rglob("*") if p.is_file() and not p.is_symlink()}


def test_two_nodes_hold_one_copy_of_an_imported_image() -> None:
    specs = select(["operator"])
    built: list[Built] = [b for b, s in zip(build_all(specs), specs, strict=True) if s.product]
    with private_containerd() as first, private_containerd() as second:
        import_into_nodes(built, [(first, root_of(first)), (second, root_of(second))])
        layout = export_layout(built[0])
        manifest = json.loads(blob_path(layout_dir(built[0]), str(layout["digest"])).read_text())
        for layer in manifest["layers"]:
            algo, _, hexd = layer["digest"].partition(":")
            inodes = {(where / algo / hexd).stat().st_ino for where in (
                layout_dir(built[0]) / "blobs", *(root_of(a) / "io.containerd.content.v1.content" / "blobs"
                                              for a in (first, second)))}
            assert len(inodes) == 1, f"layer {layer['digest']}: {len(inodes)} copies on disk"
        config = json.loads(blob_path(layout_dir(built[0]), manifest["config"]["digest"]).read_text())
        chain = chain_ids(config["rootfs"]["diff_ids"])
        mine, theirs = layer_dirs(first, NAMESPACE, chain), layer_dirs(second, NAMESPACE, chain)
        assert mine != theirs  # two unpacked trees, each in its own containerd's root
        for a, b in zip(mine, theirs, strict=True):
            files_a, files_b = _regular_files(a), _regular_files(b)
            assert files_a.keys() == files_b.keys()
            unshared = [p for p, ino in files_b.items() if files_a[p] != ino]
            assert not unshared, f"{len(unshared)} files of {b} are a second copy, e.g. {unshared[:3]}"
