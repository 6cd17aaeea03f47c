"""The rollout executor against an in-memory API (the real one is exercised in tests/e2e)."""

import pytest
from kiln_operator.serving import execute as ex
from kiln_operator.serving.builders import ServingTarget
from kiln_operator.serving.plan import Step
from kiln_operator.serving.promote import PromoteError

T = ServingTarget(name="llm", namespace="ns", model="llm", repository="s3://b/models", endpoint=None,
                  secret="s3", image="img", replicas=1)


class FakeKube:
    def __init__(self):
        self.objs = {}
        self.logs = {}

    def _key(self, api_version, kind, ns, name):
        return (kind, ns, name)

    def get(self, api_version, kind, ns, name):
        return self.objs.get((kind, ns, name))

    def create_or_adopt(self, obj):
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        created = key not in self.objs
        self.objs.setdefault(key, obj)
        return self.objs[key], created

    def delete(self, api_version, kind, ns, name, propagation="Background"):
        return self.objs.pop((kind, ns, name), None) is not None

    def list(self, api_version, kind, ns, selector):
        want = dict(kv.split("=") for kv in selector.split(","))
        return [o for (k, n, _), o in self.objs.items() if k == kind and n == ns
                and all(o["metadata"].get("labels", {}).get(a) == v for a, v in want.items())]

    def patch(self, api_version, kind, ns, name, body):
        obj = self.objs[(kind, ns, name)]
        for section, values in body.items():
            if section == "metadata":
                obj["metadata"].setdefault("annotations", {}).update(values["annotations"])
            else:
                obj.setdefault(section, {}).update(values)

    def pod_log_tail(self, ns, name, lines=5):
        return self.logs.get(name, "")

    def add_pod(self, name, labels, ip, ready=True):
        self.objs[("Pod", "ns", name)] = {
            "kind": "Pod", "metadata": {"name": name, "namespace": "ns", "labels": labels},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": str(ready)}],
                       "containerStatuses": [{"restartCount": 0, "state": {"running": {}}}]},
        }


def req(version=2):
    return ex.RolloutRequest(target=T, run="r2", version=version, prompts=["hi"], max_latency_ms=1000,
                             trainer_image="trainer", owner=None, elapsed_s=1.0)


@pytest.fixture
def live_target(monkeypatch):
    """A target serving v1 from one pod; pods 'serve' whatever `served` says."""
    kube = FakeKube()
    kube.create_or_adopt(ex.b.build_live_configmap(T, 1, "r1"))
    dep = ex.b.build_serving_deployment(T)
    dep["metadata"]["annotations"] = {ex.LIVE_VERSION: "1"}
    kube.create_or_adopt(dep)
    kube.add_pod("llm-a", ex.b.selector(T, "serving"), "10.0.0.5")
    served = {"10.0.0.5": 1}
    monkeypatch.setattr(ex, "_serves", lambda ip, model, v: served.get(ip) == v)
    return kube, served


def test_full_swap(live_target, monkeypatch):
    kube, served = live_target
    calls = []

    def fake_promote(addr, model, v, key=None):
        calls.append((addr, v))
        served[addr.split(":")[0]] = v

    monkeypatch.setattr(ex, "promote_pod", fake_promote)
    assert ex.rollout_tick(kube, req()).step is Step.ENSURE_CANARY
    kube.add_pod("llm-canary-x", {**ex.b.selector(T, "canary"), "kiln.dev/version": "2"}, "10.0.0.9")
    assert ex.rollout_tick(kube, req()).step is Step.START_GATE
    job = kube.get("batch/v1", "Job", "ns", "r2-gate-v2")
    assert "10.0.0.9:8001" in job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ex.rollout_tick(kube, req()).step is Step.WAIT_GATE
    job["status"] = {"succeeded": 1}
    assert ex.rollout_tick(kube, req()).step is Step.SWAP_VERSION
    assert calls == [("10.0.0.5:8000", 2)]
    assert kube.get("v1", "ConfigMap", "ns", "llm-serving")["data"]["version"] == "2"
    assert ex.rollout_tick(kube, req()).step is Step.RECORD_LIVE
    assert ex.rollout_tick(kube, req()).step is Step.CLEANUP
    assert kube.get("apps/v1", "Deployment", "ns", "llm-canary") is None
    kube.delete("v1", "Pod", "ns", "llm-canary-x")
    assert ex.rollout_tick(kube, req()).step is Step.DONE
    assert kube.get("apps/v1", "Deployment", "ns", "llm")["metadata"]["annotations"][ex.LIVE_RUN] == "r2"


def test_failed_gate_leaves_serving_untouched(live_target):
    kube, _ = live_target
    ex.rollout_tick(kube, req())
    kube.add_pod("llm-canary-x", {**ex.b.selector(T, "canary"), "kiln.dev/version": "2"}, "10.0.0.9")
    ex.rollout_tick(kube, req())
    kube.get("batch/v1", "Job", "ns", "r2-gate-v2")["status"] = {"failed": 1}
    kube.add_pod("gate-pod", {"job-name": "r2-gate-v2"}, "10.0.0.10")
    kube.logs["gate-pod"] = '{"passed": false, "reason": "greedy output differs"}'
    d = ex.rollout_tick(kube, req())
    assert (d.step, d.reason, d.message) == (Step.FAIL, "GateFailed", "greedy output differs")
    assert kube.get("v1", "ConfigMap", "ns", "llm-serving")["data"]["version"] == "1"
    assert kube.get("apps/v1", "Deployment", "ns", "llm-canary") is None


def test_failed_swap_reverts_the_configmap(live_target, monkeypatch):
    kube, _ = live_target

    def broken(addr, model, v, key=None):
        raise PromoteError(f"{addr}: load failed")

    monkeypatch.setattr(ex, "promote_pod", broken)
    kube.create_or_adopt(ex.b.build_canary_deployment(T, 2, "r2"))
    kube.add_pod("llm-canary-x", {**ex.b.selector(T, "canary"), "kiln.dev/version": "2"}, "10.0.0.9")
    kube.create_or_adopt(ex.b.build_gate_job(T, run="r2", version=2, canary_url="x", prompts=[],
                                             max_latency_ms=1, trainer_image="t"))
    kube.get("batch/v1", "Job", "ns", "r2-gate-v2")["status"] = {"succeeded": 1}
    d = ex.rollout_tick(kube, req())
    assert (d.step, d.reason) == (Step.FAIL, "PromoteFailed")
    assert kube.get("v1", "ConfigMap", "ns", "llm-serving")["data"]["version"] == "1"


def test_target_reading_another_repository_is_refused(live_target):
    kube, _ = live_target
    other = ex.RolloutRequest(target=ex.b.ServingTarget(**{**T.__dict__, "repository": "s3://other/models"}),
                              run="r3", version=2, prompts=[], max_latency_ms=1000, trainer_image="t", owner=None,
                              elapsed_s=1.0)
    d = ex.rollout_tick(kube, other)
    assert (d.step, d.reason) == (Step.FAIL, "RepositoryMismatch")
    assert kube.get("apps/v1", "Deployment", "ns", "llm-canary") is None
