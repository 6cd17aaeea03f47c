"""Pure builders for a serving target's objects (spec → dict; no cluster access).

A target `T` in namespace `ns` is:

* ConfigMap `T-serving`: which run, model version and variant (float32/bfloat16/int8) is live. Serving pods read the version from
  it at start, so a restarted pod comes back with the live version, never an ungated newer one.
* Deployment `T` + Service `T`: Triton pods serving the live version (ports 8000/8001/8002).
* Deployment `T-canary` (no Service selects it): one pod that loads a candidate version so the gate
  can query it before any client is served by it.
* Job `<run>-gate-v<N>`: runs `kiln-trainer gate` against the canary with the tenant's S3
  credentials, so the operator never reads tenants' secrets.

The target outlives runs (several runs roll out to it in turn), so its objects are not owned by a
run; the gate Job is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kiln_api import contract as c

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
GATE_DEADLINE_S = 15 * 60
"""activeDeadlineSeconds of a gate Job (see build_gate_job)."""
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
ROLE_SERVING, ROLE_CANARY = "serving", "canary"

Obj = dict[str, Any]


@dataclass(frozen=True)
class ServingTarget:
    """Everything the builders need to know about one target."""

    name: str
    namespace: str
    model: str
    repository: str
    """Model repository URI (s3://bucket/prefix/models)."""
    endpoint: str | None
    """S3 endpoint URL, or None for AWS."""
    secret: str | None
    """Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, in the same namespace."""
    image: str
    """Serving image: Triton plus kiln's python-backend model code and its imports."""
    replicas: int = 1
    service_account: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    restrict_repository_api: bool = False
    """Start Triton with the per-target key (Secret `T-triton-key`, see serving/access.py) guarding
    its repository API; set when the operator has a key to derive it from."""
    region: str = "us-east-1"
    """Bucket region (the run's spec.storage.region), passed as AWS_DEFAULT_REGION."""
    variant: str = "float32"
    """What the rolled-out version holds (float32, bfloat16, int8): recorded live and checked by the
    gate against the version's manifest. The model name is the same for every variant."""


def selector(t: ServingTarget, role: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "triton", "kiln.dev/serving-target": t.name, "kiln.dev/role": role}


def key_secret_name(t: ServingTarget) -> str:
    return f"{t.name}-triton-key"


def _labels(t: ServingTarget, role: str) -> dict[str, str]:
    return {**t.labels, **selector(t, role), "app.kubernetes.io/part-of": "kiln"}


def _s3_env(t: ServingTarget) -> list[Obj]:
    env: list[Obj] = [{"name": "AWS_DEFAULT_REGION", "value": t.region}]
    if t.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": t.endpoint})
    if t.secret:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": t.secret, "key": key}}})
    return env


def _key_env(t: ServingTarget) -> list[Obj]:
    if not t.restrict_repository_api:
        return []
    ref = {"name": key_secret_name(t), "key": c.TRITON_KEY_SECRET_FIELD}
    return [{"name": c.ENV_TRITON_REPOSITORY_KEY, "valueFrom": {"secretKeyRef": ref}}]


def _triton_container(t: ServingTarget, version_args: list[str], ready_path: str) -> Obj:
    return {
        "name": "triton",
        "image": t.image,
        "command": ["kiln-trainer", "serve"],
        "args": ["--repository", t.repository, "--model", t.model, *version_args],
        "env": _s3_env(t) + _key_env(t),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        # Model readiness, not server readiness: in explicit mode the server is ready before the
        # model has loaded.
        "readinessProbe": {
            "httpGet": {"path": ready_path, "port": HTTP_PORT},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": HTTP_PORT},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
        },
        "securityContext": container_security(),
    }


# Pod Security `restricted`, for every serving, canary and gate pod: these run in tenants' namespaces,
# which may enforce it, and a refused pod would leave the rollout waiting for a canary that never comes.
def container_security() -> Obj:
    return {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def _pod_spec(t: ServingTarget, containers: list[Obj], volumes: list[Obj]) -> Obj:
    spec: Obj = {
        "containers": containers,
        "volumes": volumes,
        # Triton drains in-flight requests on SIGTERM; give generation time to finish.
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        # Triton and the gate never call the API server: no token to steal from them.
        "automountServiceAccountToken": False,
    }
    if t.service_account:  # workload identity for the bucket, the same identity the run's pods use
        spec["serviceAccountName"] = t.service_account
    return spec


def build_live_configmap(t: ServingTarget, version: int, run: str) -> Obj:
    """The record of what is live; `version` is what serving pods load at start."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{t.name}-serving", "namespace": t.namespace, "labels": _labels(t, ROLE_SERVING)},
        "data": {"version": str(version), "run": run, "model": t.model, "repository": t.repository,
                 "variant": t.variant},
    }


def build_serving_deployment(t: ServingTarget) -> Obj:
    """Triton pods serving whatever version the live ConfigMap names."""
    container = _triton_container(
        t, ["--version-file", "/etc/kiln-serving/version"], f"/v2/models/{t.model}/ready"
    )
    container["volumeMounts"] = [{"name": "live", "mountPath": "/etc/kiln-serving", "readOnly": True}]
    volumes = [{"name": "live", "configMap": {"name": f"{t.name}-serving"}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": t.name, "namespace": t.namespace, "labels": _labels(t, ROLE_SERVING)},
        "spec": {
            "replicas": t.replicas,
            "selector": {"matchLabels": selector(t, ROLE_SERVING)},
            # Never fewer ready pods than asked for while pods are replaced.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": _labels(t, ROLE_SERVING)},
                "spec": _pod_spec(t, [container], volumes),
            },
        },
    }


def build_service(t: ServingTarget) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": t.name, "namespace": t.namespace, "labels": _labels(t, ROLE_SERVING)},
        "spec": {
            "selector": selector(t, ROLE_SERVING),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT},
            ],
        },
    }


def build_canary_deployment(t: ServingTarget, version: int, run: str) -> Obj:
    """One pod with the candidate version; no Service selects it, so no client reaches it."""
    labels = {**_labels(t, ROLE_CANARY), "kiln.dev/version": str(version)}
    container = _triton_container(t, ["--version", str(version)], f"/v2/models/{t.model}/versions/{version}/ready")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{t.name}-canary",
            "namespace": t.namespace,
            "labels": labels,
            "annotations": {"kiln.dev/run": run},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector(t, ROLE_CANARY)},
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": dict(labels)}, "spec": _pod_spec(t, [container], [])},
        },
    }


def build_gate_job(
    t: ServingTarget,
    *,
    run: str,
    version: int,
    canary_url: str,
    prompts: list[str],
    max_latency_ms: int,
    trainer_image: str,
    owner: Obj | None = None,
) -> Obj:
    """The gate: real inference against the canary, compared with the export's recorded reference."""
    args = [
        "--repository", t.repository, "--model", t.model, "--version", str(version), "--variant", t.variant,
        "--url", canary_url, "--max-latency-ms", str(max_latency_ms),
    ]
    for p in prompts:
        args += ["--prompt", p]
    meta: Obj = {
        "name": f"{run}-gate-v{version}",
        "namespace": t.namespace,
        "labels": {"app.kubernetes.io/part-of": "kiln", "kiln.dev/run": run, "kiln.dev/serving-target": t.name},
    }
    if owner is not None:
        meta["ownerReferences"] = [owner]
    gate: Obj = {"name": "gate", "image": trainer_image, "command": ["kiln-trainer", "gate"], "args": args,
                 "env": _s3_env(t), "securityContext": container_security()}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            # A gate whose pod never starts (image, quota) or hangs fails by itself: the rollout reads
            # the Job's DeadlineExceeded instead of waiting forever. It sends a few prompts: 15 min is ample.
            "activeDeadlineSeconds": GATE_DEADLINE_S,
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": dict(meta["labels"])}, "spec": {
                **_pod_spec(t, [gate], []), "restartPolicy": "Never"}},
        },
    }
