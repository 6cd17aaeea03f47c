"""Which pods `up` restarts after importing a changed image (pure: pod dicts in, names out)."""

from __future__ import annotations

from typing import Any

from kiln_devcluster.images.stale import stale_pods

OP = "ghcr.io/kiln-dev/kiln-operator:0.1.0"
NEW, OLD = "sha256:" + "b" * 64, "sha256:" + "a" * 64


def pod(name: str, image_id: str, phase: str = "Running", owner: str | None = "ReplicaSet",
        image: str = OP) -> dict[str, Any]:
    owners = [{"kind": owner, "name": "x", "controller": True}] if owner else []
    return {"metadata": {"namespace": "kiln-system", "name": name, "ownerReferences": owners},
            "status": {"phase": phase, "containerStatuses": [{"image": image, "imageID": image_id}]}}


def test_only_live_controller_owned_pods_on_an_older_build_are_restarted() -> None:
    pods = [
        pod("stale", OLD),
        pod("current", NEW),
        pod("job-pod", OLD, owner="Job"),
        pod("bare", OLD, owner=None),
        pod("finished", OLD, phase="Succeeded"),
        pod("other-image", OLD, image="kiln.local/coredns:v1.14.7"),
        pod("starting", ""),
    ]
    assert stale_pods(pods, {OP: NEW}) == [("kiln-system", "stale", OP)]


def test_nothing_is_restarted_when_no_image_changed() -> None:
    assert stale_pods([pod("a", NEW), pod("b", NEW, owner="StatefulSet")], {OP: NEW}) == []
