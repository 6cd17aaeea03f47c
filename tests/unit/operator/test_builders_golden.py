"""Builders against golden YAML, plus the properties a golden file could hide."""

from __future__ import annotations

from typing import Any

import yaml
from kiln_api.data_config import PrepareConfig
from kiln_api.export_config import ExportConfig
from kiln_api.train_presets import apply_preset
from kiln_op_testlib import check_golden
from kiln_operator.builders.common import Run
from kiln_operator.builders.export_job import build_export_job
from kiln_operator.builders.indexed_job import build_headless_service, build_indexed_job
from kiln_operator.builders.prepare_job import build_prepare_job
from kiln_operator.builders.pytorchjob import build_pytorchjob
from kiln_operator.builders.rbac import build_rbac
from kiln_operator.configmap import build_config_map


def _pods(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "PyTorchJob":
        return [r["template"]["spec"] for r in obj["spec"]["pytorchReplicaSpecs"].values()]
    return [obj["spec"]["template"]["spec"]]


def test_tiny_children_match_golden(tiny_run: Run) -> None:
    check_golden("tiny_prepare_job", build_prepare_job(tiny_run))
    check_golden("tiny_pytorchjob", build_pytorchjob(tiny_run))
    check_golden("tiny_indexed_job", [build_headless_service(tiny_run), build_indexed_job(tiny_run)])
    check_golden("tiny_export_job", build_export_job(tiny_run))
    check_golden("tiny_rbac", build_rbac(tiny_run))
    check_golden("tiny_configmap", _without_data_hash(tiny_run, build_config_map(tiny_run)))


def _without_data_hash(run: Run, cm: dict[str, Any]) -> dict[str, Any]:
    """The dataset hash is the data helper's (DataSpec.spec_hash); checked in its own test below."""
    from kiln_operator.configmap import dataset_uri

    uri = dataset_uri(run)
    assert uri in cm["data"]["train.yaml"]
    cm["data"] = {k: v.replace(uri.rsplit("/", 1)[1], "<data-hash>") for k, v in cm["data"].items()}
    return cm


def test_gpu_children_match_golden(gpu_run: Run) -> None:
    check_golden("gpu_pytorchjob", build_pytorchjob(gpu_run))
    check_golden("gpu_rbac", build_rbac(gpu_run))


def test_every_child_is_owned_named_and_labelled(tiny_run: Run) -> None:
    objs = [build_prepare_job(tiny_run), build_pytorchjob(tiny_run), build_indexed_job(tiny_run),
            build_headless_service(tiny_run), build_export_job(tiny_run), build_config_map(tiny_run),
            *build_rbac(tiny_run)]
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(set(names)) == len(names)
    for o in objs:
        (ref,) = o["metadata"]["ownerReferences"]
        assert ref["uid"] == tiny_run.uid and ref["controller"] is True
        assert o["metadata"]["name"].startswith("tiny-")
        assert o["metadata"]["labels"]["kiln.dev/run"] == "tiny"


def test_pods_are_restricted_and_get_credentials_only_by_reference(tiny_run: Run) -> None:
    for job in (build_prepare_job(tiny_run), build_pytorchjob(tiny_run), build_indexed_job(tiny_run),
                build_export_job(tiny_run)):
        for pod in _pods(job):
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["serviceAccountName"] == "tiny-trainer"
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
                assert sc["capabilities"] == {"drop": ["ALL"]}
                env = {e["name"]: e for e in c["env"]}
                assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "kiln-s3"
                assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
                assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.kiln-system.svc:9000"
                assert env["KILN_RUN_NAME"]["value"] == "tiny"
                assert env["KILN_RUN_NAMESPACE"]["value"] == "team-a"


def test_gang_shapes(tiny_run: Run, gpu_run: Run) -> None:
    pj = build_pytorchjob(gpu_run)["spec"]
    assert pj["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    assert pj["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    assert pj["nprocPerNode"] == "8"
    container = pj["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch"  # Kubeflow injects the rendezvous env only into this name
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    job = build_indexed_job(tiny_run)["spec"]
    assert job["completions"] == job["parallelism"] == 2 and job["completionMode"] == "Indexed"
    env = {e["name"]: e for e in job["template"]["spec"]["containers"][0]["env"]}
    assert env["MASTER_ADDR"]["value"] == "tiny-train-0.tiny-train"
    assert job["template"]["spec"]["subdomain"] == build_headless_service(tiny_run)["metadata"]["name"]
    assert env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"].endswith("job-completion-index']")


def test_workload_identity_binds_the_run_service_account(gpu_run: Run) -> None:
    objs = build_rbac(gpu_run)
    assert [o["kind"] for o in objs] == ["Role", "RoleBinding"]  # no SA of ours: the run brings one
    role, binding = objs
    (rule,) = role["rules"]
    # The run's progress ConfigMap only: never the TrainingRun status (usage, cost) itself.
    assert rule == {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["big-progress"],
                    "verbs": ["get", "patch"]}
    assert binding["subjects"][0]["name"] == "team-a-s3"


def test_configmap_files_load_as_the_step_configs(tiny_run: Run) -> None:
    data = build_config_map(tiny_run)["data"]
    train = apply_preset(yaml.safe_load(data["train.yaml"]))  # as kiln-trainer train loads it
    prepare = PrepareConfig.from_dict(yaml.safe_load(data["prepare.yaml"]))
    export = ExportConfig.from_dict(yaml.safe_load(data["export.yaml"]))
    assert train.run == "tiny" and train.schedule.max_steps == 400
    assert train.batch.global_batch_size == 8 and train.check_world(2) == 1
    assert train.model.vocab_size == 2000  # follows the tokenizer, not the preset
    # each namespace has its own root below spec.storage.uri
    assert train.data.path == f"s3://kiln/demo/team-a/datasets/{prepare.data.spec_hash()}"
    assert prepare.output == "s3://kiln/demo/team-a" and len(prepare.data.sources) == 2
    assert export.checkpoints_uri == "s3://kiln/demo/team-a/runs/tiny/checkpoints"
