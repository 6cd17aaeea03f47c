"""The operator (in-process, kopf's runner) against the embedded cluster: preflight, children, restarts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from operatorkit import (
    children,
    condition,
    create_run,
    events,
    get_run,
    operator,
    phase,
    run_namespace,
    tiny_run,
)
from waiting import wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def ns(cluster: Any) -> Iterator[str]:
    with run_namespace(cluster, "op") as name:
        yield name


def test_run_that_cannot_fit_fails_preflight(cluster: Any, ns: str, s3_bucket: str) -> None:
    body = tiny_run(cluster, s3_bucket, name="huge")
    body["spec"]["model"] = {"preset": "gpt_7b"}
    with operator(cluster, ns):
        create_run(cluster, ns, body)
        wait_for(lambda: phase(cluster, ns, "huge") == "Failed", 60, "huge run Failed")
    run = get_run(cluster, ns, "huge")
    ready = condition(run, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PreflightFailed"
    # 7B parameters on 2 CPU pods of 2 GiB: no setting rescues it, the message says what would.
    assert "does not fit" in ready["message"] and "add nodes" in ready["message"]
    assert condition(run, "Stalled")["status"] == "True"
    assert run["status"]["observedGeneration"] == run["metadata"]["generation"]
    assert children(cluster, ns, "huge") == {}, "a failed preflight creates nothing"
    assert any(e.startswith("PreflightFailed") for e in events(cluster, ns, "huge"))


def test_children_survive_operator_restart_without_duplicates(cluster: Any, ns: str, s3_bucket: str) -> None:
    create_run(cluster, ns, tiny_run(cluster, s3_bucket))
    expected = {("ConfigMap", "tiny-config"), ("ServiceAccount", "tiny-trainer"), ("Role", "tiny-trainer"),
                ("RoleBinding", "tiny-trainer"), ("Job", "tiny-prepare")}
    def all_there() -> dict[tuple[str, str], str] | None:
        got = children(cluster, ns, "tiny")
        return got if expected <= set(got) else None

    with operator(cluster, ns):
        first = wait_for(all_there, 60, "first children of tiny")
    # A second operator process starts cold (nothing in memory) and must adopt, not duplicate.
    with operator(cluster, ns):
        wait_for(lambda: get_run(cluster, ns, "tiny")["status"].get("observedGeneration") is not None, 30,
                 "second operator reconciled")
        again = children(cluster, ns, "tiny")
    for key in expected:
        assert again[key] == first[key], f"{key} was recreated by the restarted operator"
    run = get_run(cluster, ns, "tiny")
    job = client.BatchV1Api(cluster.api).read_namespaced_job("tiny-prepare", ns)
    (ref,) = job.metadata.owner_references
    assert ref.uid == run["metadata"]["uid"] and ref.controller is True
    assert run["status"]["phase"] in ("Preparing", "Training")
    assert condition(run, "Prepared")["reason"] in ("InProgress", "Completed")


def test_trainer_identity_may_patch_only_its_own_progress(cluster: Any, ns: str, s3_bucket: str) -> None:
    """The operator's RBAC for a run: the trainer writes its run's progress ConfigMap and nothing
    else (the operator copies the record into status; no trainer can touch a TrainingRun)."""
    create_run(cluster, ns, tiny_run(cluster, s3_bucket))
    create_run(cluster, ns, tiny_run(cluster, s3_bucket, name="other"))
    with operator(cluster, ns):
        wait_for(lambda: ("RoleBinding", "tiny-trainer") in children(cluster, ns, "tiny"), 60, "tiny's RBAC")
    who = f"--as=system:serviceaccount:{ns}:tiny-trainer"

    def can(*args: str) -> bool:
        out = cluster.kubectl("auth", "can-i", *args, "-n", ns, who, check=False)
        return out.stdout.strip() == "yes"

    assert can("patch", "configmaps/tiny-progress")
    assert not can("patch", "configmaps/other-progress")
    assert not can("patch", "trainingruns.kiln.dev/tiny", "--subresource=status")
    assert not can("patch", "trainingruns.kiln.dev/tiny")  # the spec stays the user's
    assert not can("get", "secrets")
    assert not can("create", "pods")


def test_deleting_a_run_removes_its_children(cluster: Any, ns: str, s3_bucket: str) -> None:
    create_run(cluster, ns, tiny_run(cluster, s3_bucket))
    custom = client.CustomObjectsApi(cluster.api)
    with operator(cluster, ns):
        wait_for(lambda: ("Job", "tiny-prepare") in children(cluster, ns, "tiny"), 60, "children of tiny")
        custom.delete_namespaced_custom_object("kiln.dev", "v1alpha1", ns, "trainingruns", "tiny")
        wait_for(lambda: not custom.list_namespaced_custom_object("kiln.dev", "v1alpha1", ns, "trainingruns")["items"],
                 60, "tiny deleted (the operator releases kopf's finalizer)")
    # Owner references, not a finalizer of ours, take the children away (the garbage collector).
    wait_for(lambda: children(cluster, ns, "tiny") == {}, 120, "children of tiny garbage-collected")
