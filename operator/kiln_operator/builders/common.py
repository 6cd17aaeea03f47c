"""Pieces every child manifest shares: names, labels, owner references, env, pod security.

Builders are pure: (run) → dict. ``Run`` carries just what they need from the TrainingRun body, so
golden tests build one by hand and no cluster is involved. Every name, path, port and command a pod
shares with the trainer comes from ``kiln_api.contract``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kiln_api import contract as c
from kiln_api import trainingrun as tr
from kiln_api.trainingrun import TrainingRunSpec

LABEL_RUN = "kiln.dev/run"
LABEL_STAGE = "kiln.dev/stage"
SPOT_TAINT = "kiln.dev/spot"


@dataclass(frozen=True)
class Run:
    """The identity and spec of one TrainingRun, as the builders see it."""

    name: str
    """metadata.name."""
    namespace: str
    """metadata.namespace."""
    uid: str
    """metadata.uid, for owner references."""
    spec: TrainingRunSpec
    """The parsed spec."""


def child_name(run: Run, stage: str) -> str:
    """Fixed child names make create-or-adopt idempotent across operator restarts."""
    return f"{run.name}-{stage}"


def trainer_sa(run: Run) -> str:
    """The ServiceAccount trainer pods run as."""
    return run.spec.storage.service_account_name or child_name(run, "trainer")


def labels(run: Run, stage: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "kiln",
        "app.kubernetes.io/managed-by": "kiln-operator",
        LABEL_RUN: run.name,
        LABEL_STAGE: stage,
    }


def metadata(run: Run, name: str, stage: str) -> dict[str, Any]:
    """Child metadata with labels and a controller owner reference (garbage collection on delete)."""
    return {
        "name": name,
        "namespace": run.namespace,
        "labels": labels(run, stage),
        "ownerReferences": [
            {
                "apiVersion": f"{tr.GROUP}/{tr.VERSION}",
                "kind": tr.KIND,
                "name": run.name,
                "uid": run.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def env_values(values: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def storage_env(run: Run) -> list[dict[str, Any]]:
    """Run identity and S3 access for every trainer container; credentials only by secretKeyRef."""
    s = run.spec.storage
    env = env_values({c.ENV_RUN_NAME: run.name, c.ENV_RUN_NAMESPACE: run.namespace, c.ENV_STORAGE_URI: s.uri,
                      c.ENV_AWS_REGION: s.region, "PYTHONUNBUFFERED": "1"})
    if s.endpoint:
        env.append({"name": c.ENV_AWS_ENDPOINT, "value": s.endpoint})
    if s.secret_ref is not None:
        for key in c.CREDENTIAL_KEYS:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": s.secret_ref.name, "key": key}}})
    return env


def container_security() -> dict[str, Any]:
    """Pod Security Standard `restricted` at container level."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"}}


def resources(run: Run, gpus: bool) -> dict[str, Any]:
    r = run.spec.training.resources
    amounts: dict[str, Any] = {"cpu": r.cpu, "memory": r.memory}
    if gpus and run.spec.training.gpus_per_node > 0:
        amounts["nvidia.com/gpu"] = run.spec.training.gpus_per_node
    return {"requests": dict(amounts), "limits": dict(amounts)}


def volumes(run: Run, shm: bool) -> list[dict[str, Any]]:
    vols: list[dict[str, Any]] = [
        {"name": c.CONFIG_VOLUME, "configMap": {"name": child_name(run, "config")}},
        {"name": c.WORK_VOLUME, "emptyDir": {}},  # the only writable place under a read-only root
    ]
    if shm:
        vols.append({"name": c.SHM_VOLUME, "emptyDir": {"medium": "Memory"}})  # NCCL/gloo shared memory
    return vols


def mounts(shm: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"name": c.CONFIG_VOLUME, "mountPath": c.CONFIG_DIR, "readOnly": True},
        {"name": c.WORK_VOLUME, "mountPath": c.WORK_DIR},
    ]
    if shm:
        out.append({"name": c.SHM_VOLUME, "mountPath": c.SHM_DIR})
    return out


def trainer_container(run: Run, step: str, *, name: str = c.TRAINER_CONTAINER,
                      extra_env: list[dict[str, Any]] | None = None, gpus: bool = False, shm: bool = False,
                      ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A container running the contract's ``kiln-trainer <step> --config /etc/kiln/<step>.yaml``."""
    container: dict[str, Any] = {
        "name": name,
        "image": run.spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": c.step_command(step),
        "env": storage_env(run) + env_values(c.writable_env()) + (extra_env or []),
        "resources": resources(run, gpus),
        "securityContext": container_security(),
        "volumeMounts": mounts(shm),
    }
    if ports:
        container["ports"] = ports
    return container


def never_retry_bad_config(container: str) -> dict[str, Any]:
    """A Job podFailurePolicy: a config error (the contract's permanent exit codes) fails the Job at
    once instead of spending its backoffLimit on pods that would fail the same way."""
    return {"rules": [{"action": "FailJob", "onExitCodes": {
        "containerName": container, "operator": "In", "values": list(c.PERMANENT_EXIT_CODES)}}]}


def pod_spec(run: Run, container: dict[str, Any], *, shm: bool, grace_seconds: int = 30,
             api_token: bool = False) -> dict[str, Any]:
    """``api_token``: mount the ServiceAccount token; only pods that talk to the API server need it
    (the training gang's progress sink). Without it a compromised step holds no credential for the API."""
    spec: dict[str, Any] = {
        "serviceAccountName": trainer_sa(run),
        "automountServiceAccountToken": api_token,
        "restartPolicy": "Never",  # the operator restarts whole gangs, never single pods
        "securityContext": pod_security(),
        "terminationGracePeriodSeconds": grace_seconds,
        "containers": [container],
        "volumes": volumes(run, shm),
    }
    if run.spec.training.spot:
        spec["tolerations"] = [{"key": SPOT_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
    return spec


def step_job(run: Run, stage: str, backoff_limit: int = 2) -> dict[str, Any]:
    """A one-pod Job running ``kiln-trainer <stage>``; its steps are idempotent, so Kubernetes may retry."""
    meta = metadata(run, child_name(run, stage), stage)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": backoff_limit,
            "podFailurePolicy": never_retry_bad_config(c.TRAINER_CONTAINER),
            "template": {
                "metadata": {"labels": dict(meta["labels"])},
                "spec": pod_spec(run, trainer_container(run, stage), shm=False),
            },
        },
    }
