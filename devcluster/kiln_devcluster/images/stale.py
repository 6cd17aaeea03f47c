"""Pods still running an earlier build of a project image are restarted onto the new one.

The images keep one tag (`ghcr.io/kiln-dev/kiln-operator:0.1.0`) across builds, as a release
would, so a Deployment's pods do not notice a re-import: the kubelet keeps the container it has.
After `up` imports a changed image, every running pod whose container runs another image id under
that name, and that a controller re-creates (ReplicaSet, StatefulSet, DaemonSet), is deleted, so
the operator and serving pods of the cluster run the code of the checkout. Job pods and bare pods
are left alone (a Job's next pod gets the new image anyway).
"""

from __future__ import annotations

from typing import Any

RESTARTABLE_OWNERS = frozenset({"ReplicaSet", "StatefulSet", "DaemonSet"})


def stale_pods(pods: list[dict[str, Any]], current: dict[str, str]) -> list[tuple[str, str, str]]:
    """(namespace, pod, image) of each live, controller-owned pod with a container that runs an
    image name of `current` (full name → config digest ``sha256:…``) at another image id."""
    out = []
    for pod in pods:
        meta, status = pod.get("metadata", {}), pod.get("status", {})
        if status.get("phase") not in ("Pending", "Running"):
            continue
        if not any(o.get("controller") and o.get("kind") in RESTARTABLE_OWNERS for o in meta.get("ownerReferences", [])):
            continue
        for c in status.get("containerStatuses", []) + status.get("initContainerStatuses", []):
            want = current.get(c.get("image", ""))
            if want and c.get("imageID") and c["imageID"] != want:
                out.append((meta["namespace"], meta["name"], c["image"]))
                break
    return out
