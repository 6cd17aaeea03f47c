"""The image contract: what the operator's pods run, run inside the project's built images.

No cluster. The images are built from images/*/Dockerfile on the dev-cluster bases (skipped when
unchanged), imported into a private containerd and run with `ctr run` as their own non-root user
with a read-only root filesystem. The commands come from the operator's own builders (training
Jobs for the tiny example, serving/canary Deployments and the gate Job), so a pod command the
operator starts using, or an image a builder starts naming, is checked without editing this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from imagekit import Ran, missing_prerequisites, private_containerd, run_in_image
from kiln_devcluster.images.build import Built, build_all
from kiln_devcluster.images.containerd import import_images
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


@pytest.fixture(scope="module")
def images() -> Iterator[tuple[str, dict[str, Built]]]:
    """(containerd address, ref -> built image) for the project's images, built and imported."""
    specs = select(["operator", "trainer", "serving"])
    built = [b for b, s in zip(build_all(specs), specs, strict=True) if s.product]
    with private_containerd() as address:
        import_images(built, address)
        yield address, {b.ref: b for b in built}


def _probe(address: str, ref: str, script: str, *args: str, env: dict[str, str] | None = None) -> Ran:
    return run_in_image(address, ref, ["python3", f"/probes/{script}", *args],
                        mounts={str(PROBES): "/probes"}, env=env)


PODS = pod_commands()


@pytest.mark.parametrize(("what", "image", "command"), PODS, ids=[what for what, _, _ in PODS])
def test_each_pod_command_runs_in_its_image(images: tuple[str, dict[str, Built]], what: str, image: str,
                                            command: tuple[str, ...]) -> None:
    address, by_ref = images
    assert image in by_ref, f"{what} runs image {image}, which the project does not build ({sorted(by_ref)})"
    assert command[:1] == ("kiln-trainer",), f"{what}: unexpected command {command} (teach this test about it)"
    helped = run_in_image(address, image, [*command[:2], "--help"])
    assert helped.rc == 0 and "usage:" in helped.output, f"{what}: {' '.join(command[:2])} --help:\n{helped.output}"
    imported = _probe(address, image, "subcommand_modules.py", command[1])
    assert imported.rc == 0, f"{what}: the module behind `{' '.join(command[:2])}` does not import:\n{imported.output}"


def test_images_run_as_their_non_root_user_on_a_read_only_root(images: tuple[str, dict[str, Built]]) -> None:
    address, by_ref = images
    check = "import os; print(os.getuid()); open('/opt/probe', 'w')"
    for ref in by_ref:
        out = run_in_image(address, ref, ["python3", "-c", check])
        uid = out.output.split()[0] if out.output else ""
        assert uid.isdigit() and int(uid) > 0, f"{ref} runs as uid {uid!r}:\n{out.output}"
        assert out.rc != 0 and "Read-only file system" in out.output, f"{ref}: the root was writable"


def test_trainer_has_cpu_adam_prebuilt(images: tuple[str, dict[str, Built]]) -> None:
    address, by_ref = images
    trainer = next(ref for ref, b in by_ref.items() if b.name == "trainer")
    out = _probe(address, trainer, "cpu_adam.py", env={"DS_ACCELERATOR": "cpu"})
    assert out.rc == 0 and "ok cpu_adam" in out.output, out.output


def test_serving_image_imports_everything_the_triton_model_imports(images: tuple[str, dict[str, Built]]) -> None:
    address, by_ref = images
    serving = next(ref for ref, b in by_ref.items() if b.name == "serving")
    out = _probe(address, serving, "model_imports.py")
    assert out.rc == 0 and "ok numpy" in out.output, out.output


def test_serving_image_runs_a_python_backend_model(images: tuple[str, dict[str, Built]]) -> None:
    address, by_ref = images
    serving = next(ref for ref, b in by_ref.items() if b.name == "serving")
    out = _probe(address, serving, "triton_probe.py")
    assert out.rc == 0 and "ok triton" in out.output, out.output


def test_operator_entrypoint_starts(images: tuple[str, dict[str, Built]]) -> None:
    address, by_ref = images
    operator = next(ref for ref, b in by_ref.items() if b.name == "operator")
    # The chart runs the image's ENTRYPOINT (kiln-operator), which has kopf import these modules.
    check = "import shutil, kopf, kiln_operator.handlers, kiln_operator.main; print(shutil.which('kiln-operator'))"
    out = run_in_image(address, operator, ["python3", "-c", check])
    assert out.rc == 0 and "/kiln-operator" in out.output, out.output


def test_an_unchanged_image_is_not_imported_again(images: tuple[str, dict[str, Built]],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    address, by_ref = images
    import_images(list(by_ref.values()), address)
    out = capsys.readouterr().out
    assert out.count("already in") == len(by_ref), out
