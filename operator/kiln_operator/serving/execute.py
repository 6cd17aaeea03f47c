"""Observe a serving target, plan the next rollout step, and carry it out.

`rollout_tick()` is what the RollingOut handler calls on each timer tick: it never waits in a loop
(waiting happens between ticks), and every step is safe to repeat after an operator restart.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Protocol

from kiln_operator.serving import access
from kiln_operator.serving import builders as b
from kiln_operator.serving.plan import Decision, Observed, PodView, Step, plan
from kiln_operator.serving.promote import PromoteError, promote_pod

log = logging.getLogger("kiln.rollout")
DEPLOY = ("apps/v1", "Deployment")
CONFIGMAP = ("v1", "ConfigMap")
SERVICE = ("v1", "Service")
JOB = ("batch/v1", "Job")
POD = ("v1", "Pod")
NETPOL = ("networking.k8s.io/v1", "NetworkPolicy")
LIVE_VERSION = "kiln.dev/live-version"
LIVE_RUN = "kiln.dev/live-run"


class KubeLike(Protocol):
    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create_or_adopt(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]: ...
    def create(self, obj: dict[str, Any]) -> bool: ...
    def delete(self, api_version: str, kind: str, namespace: str, name: str,
               propagation: str = "Background") -> bool: ...
    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    def patch(self, api_version: str, kind: str, namespace: str, name: str, body: dict[str, Any]) -> Any: ...
    def pod_log_tail(self, namespace: str, name: str, lines: int = 5) -> str: ...


@dataclass(frozen=True)
class RolloutRequest:
    """One run's wish: make `version` of `target.model` live on `target`."""

    target: b.ServingTarget
    run: str
    version: int
    prompts: list[str]
    max_latency_ms: int
    trainer_image: str
    owner: dict[str, Any] | None
    elapsed_s: float
    access: access.Access = field(default_factory=access.Access)
    """Repository-API key and network rules for the target's pods."""


def _selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def pod_view(pod: dict[str, Any]) -> PodView:
    st = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
    cs = (st.get("containerStatuses") or [{}])[0]
    waiting = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
    deleting = bool(pod.get("metadata", {}).get("deletionTimestamp"))
    return PodView(ip=st.get("podIP"), ready=ready and not deleting, waiting_reason=waiting,
                   restarts=int(cs.get("restartCount") or 0))


def _serves(ip: str, model: str, version: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:{b.HTTP_PORT}/v2/models/{model}/versions/{version}/ready",
                                    timeout=5) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def kiln_manages(obj: dict[str, Any], t: b.ServingTarget) -> bool:
    """Whether `obj` is one of target `t`'s objects, as the builders label them. The target outlives
    runs, so these carry no owner reference: the labels are the only mark of ownership."""
    labels = obj.get("metadata", {}).get("labels") or {}
    return labels.get("app.kubernetes.io/part-of") == "kiln" and labels.get("kiln.dev/serving-target") == t.name


def target_conflict(kube: KubeLike, t: b.ServingTarget) -> str:
    """The first object under one of the target's names that kiln does not manage, named; else ""."""
    for (api_version, kind), name in ((DEPLOY, t.name), (SERVICE, t.name), (CONFIGMAP, f"{t.name}-serving"),
                                      (DEPLOY, f"{t.name}-canary"), (NETPOL, f"{t.name}-{b.ROLE_SERVING}"),
                                      (NETPOL, f"{t.name}-{b.ROLE_CANARY}")):
        obj = kube.get(api_version, kind, t.namespace, name)
        if obj is not None and not kiln_manages(obj, t):
            return (f"{kind} {t.namespace}/{name} exists but is not managed by kiln (labels "
                    f"app.kubernetes.io/part-of=kiln, kiln.dev/serving-target={t.name} missing); "
                    "choose another serving target or remove that object")
    return ""


def _ensure_access(kube: KubeLike, req: RolloutRequest) -> None:
    """The target's key Secret and NetworkPolicies, before any of its pods starts."""
    key = req.access.target_key(req.target)
    if key is not None and req.target.restrict_repository_api:
        kube.create(access.build_key_secret(req.target, key))  # an existing one is kept, never read
    for policy in access.build_network_policies(req.target, req.access):
        kube.create_or_adopt(policy)


def _delete_canary(kube: KubeLike, t: b.ServingTarget) -> None:
    """Delete the canary only if it is kiln's (re-read: it may have been replaced since observe)."""
    canary = kube.get(*DEPLOY, t.namespace, f"{t.name}-canary")
    if canary is not None and kiln_manages(canary, t):
        kube.delete(*DEPLOY, t.namespace, f"{t.name}-canary")


def _owned_by(obj: dict[str, Any], owner: dict[str, Any] | None) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return owner is None or any(r.get("uid") == owner.get("uid") for r in refs)


def _gate_state(kube: KubeLike, req: RolloutRequest) -> tuple[str | None, str]:
    ns, name = req.target.namespace, f"{req.run}-gate-v{req.version}"
    job = kube.get(*JOB, ns, name)
    if job is None:
        return None, ""
    if not _owned_by(job, req.owner):
        # A Job someone else made under the gate's name must never count as a passed gate.
        return "Conflict", f"Job {ns}/{name} exists and is not owned by run {req.run}"
    st = job.get("status") or {}
    if st.get("succeeded"):
        return "Succeeded", ""
    if st.get("failed"):
        pods = kube.list(*POD, ns, f"job-name={name}")
        tail = kube.pod_log_tail(ns, pods[0]["metadata"]["name"]) if pods else ""
        return "Failed", _verdict_reason(tail) or "the gate Job failed"
    return "Running", ""


def _verdict_reason(log_tail: str) -> str:
    for line in reversed(log_tail.strip().splitlines()):
        try:
            return str(json.loads(line).get("reason", ""))
        except (ValueError, AttributeError):
            continue
    return log_tail.strip()[-500:]


def observe(kube: KubeLike, req: RolloutRequest) -> Observed:
    t, ns = req.target, req.target.namespace
    deploy = kube.get(*DEPLOY, ns, t.name)
    live = None
    if deploy is not None:
        ann = deploy["metadata"].get("annotations") or {}
        live = int(ann[LIVE_VERSION]) if ann.get(LIVE_VERSION, "").isdigit() else None
    serving = []
    for pod in kube.list(*POD, ns, _selector(b.selector(t, b.ROLE_SERVING))):
        v = pod_view(pod)
        if v.ready and v.ip:
            # Asked of each pod, never assumed from the live record: a pod that restarted may serve nothing.
            version = req.version if _serves(v.ip, t.model, req.version) else \
                live if live is not None and _serves(v.ip, t.model, live) else None
            v = PodView(v.ip, True, v.waiting_reason, v.restarts, version)
        serving.append(v)
    canary = kube.get(*DEPLOY, ns, f"{t.name}-canary")
    canary_version = None
    if canary is not None:
        label = canary["metadata"].get("labels", {}).get("kiln.dev/version", "")
        canary_version = int(label) if label.isdigit() else None
    canary_pods = [pod_view(p) for p in kube.list(
        *POD, ns, _selector({**b.selector(t, b.ROLE_CANARY), "kiln.dev/version": str(req.version)}))]
    gate, gate_msg = _gate_state(kube, req)
    live_cm = kube.get(*CONFIGMAP, ns, f"{t.name}-serving") if deploy is not None else None
    return Observed(
        candidate=req.version, repository=t.repository,
        serving_repository=(live_cm or {}).get("data", {}).get("repository"), live_version=live, serving_exists=deploy is not None,
        serving_pods=serving, serving_replicas=t.replicas, canary_version=canary_version,
        canary_pod=canary_pods[0] if canary_pods else None, gate=gate, gate_message=gate_msg,
        elapsed_s=req.elapsed_s,
        conflict=target_conflict(kube, t) or (gate_msg if gate == "Conflict" else ""),
    )


def execute(kube: KubeLike, req: RolloutRequest, o: Observed, d: Decision) -> Decision:
    """Carry out `d`; returns the decision that actually holds (a failed swap becomes FAIL)."""
    t, ns = req.target, req.target.namespace
    if d.step is Step.ENSURE_CANARY:
        if o.canary_version is not None and o.canary_version != req.version:
            _delete_canary(kube, t)
        else:
            _ensure_access(kube, req)
            kube.create_or_adopt(b.build_canary_deployment(t, req.version, req.run))
    elif d.step is Step.START_GATE:
        assert o.canary_pod is not None and o.canary_pod.ip
        kube.create_or_adopt(b.build_gate_job(
            t, run=req.run, version=req.version, canary_url=f"{o.canary_pod.ip}:{b.GRPC_PORT}",
            prompts=req.prompts, max_latency_ms=req.max_latency_ms, trainer_image=req.trainer_image,
            owner=req.owner,
        ))
    elif d.step is Step.CREATE_SERVING:
        _ensure_access(kube, req)
        kube.create_or_adopt(b.build_live_configmap(t, req.version, req.run))
        kube.create_or_adopt(b.build_serving_deployment(t))
        kube.create_or_adopt(b.build_service(t))
    elif d.step is Step.SWAP_VERSION:
        return _swap(kube, req, o)
    elif d.step is Step.RECORD_LIVE:
        kube.patch(*DEPLOY, ns, t.name, {"metadata": {"annotations": {
            LIVE_VERSION: str(req.version), LIVE_RUN: req.run}}})
        kube.patch(*CONFIGMAP, ns, f"{t.name}-serving", {"data": {"run": req.run, "variant": t.variant}})
    elif d.step in (Step.CLEANUP, Step.FAIL):
        _delete_canary(kube, t)
    return d


def _swap(kube: KubeLike, req: RolloutRequest, o: Observed) -> Decision:
    t, ns = req.target, req.target.namespace
    # The ConfigMap first: a pod that restarts from here on comes back with the new version.
    kube.patch(*CONFIGMAP, ns, f"{t.name}-serving", {"data": {"version": str(req.version)}})
    done: list[str] = []
    key = req.access.target_key(t) if t.restrict_repository_api else None
    try:
        for pod in o.serving_pods:
            if pod.ready and pod.ip and pod.version != req.version:
                promote_pod(f"{pod.ip}:{b.HTTP_PORT}", t.model, req.version, key=key)
                done.append(pod.ip)
    except PromoteError as e:
        log.error("swap to v%s failed, reverting to v%s: %s", req.version, o.live_version, e)
        if o.live_version is not None:
            kube.patch(*CONFIGMAP, ns, f"{t.name}-serving", {"data": {"version": str(o.live_version)}})
            for ip in done:
                try:
                    promote_pod(f"{ip}:{b.HTTP_PORT}", t.model, o.live_version, key=key)
                except PromoteError as again:
                    log.error("reverting %s failed: %s", ip, again)
        _delete_canary(kube, t)
        return Decision(Step.FAIL, "PromoteFailed", str(e))
    return Decision(Step.SWAP_VERSION)


def rollout_tick(kube: KubeLike, req: RolloutRequest) -> Decision:
    """Observe, decide, act: one step of the rollout."""
    o = observe(kube, req)
    d = plan(o)
    log.info("rollout %s → %s v%s: %s %s", req.run, req.target.name, req.version, d.step.value, d.message)
    return execute(kube, req, o, d)
