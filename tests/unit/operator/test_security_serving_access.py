"""Serving access: the per-target repository-API key and the NetworkPolicies the rollout creates
(real Triton refusing keyless loads: tests/integration/test_security_triton_key.py)."""

from __future__ import annotations

from typing import Any

from kiln_api import contract as c
from kiln_operator.serving import access
from kiln_operator.serving import builders as b
from kiln_operator.serving import execute as ex
from test_security_rollout import Kube

KEYED = b.ServingTarget(name="llm", namespace="team-a", model="llm", repository="s3://b/models", endpoint=None,
                        secret="s3", image="img", restrict_repository_api=True)
ACCESS = access.Access(operator_key="k0", operator_namespace="kiln-system", client_namespaces=("apps",))


class CreatingKube(Kube):
    def __init__(self, *objs: dict[str, Any]) -> None:
        super().__init__(*objs)
        self.created: list[dict[str, Any]] = []

    def create(self, obj: dict[str, Any]) -> bool:
        self.created.append(obj)
        return True


def test_keys_are_per_target_and_derived_not_stored() -> None:
    other = b.ServingTarget(**{**KEYED.__dict__, "namespace": "team-b"})
    key = ACCESS.target_key(KEYED)
    assert key and key == ACCESS.target_key(KEYED) != ACCESS.target_key(other)
    assert access.Access(operator_key="k1").target_key(KEYED) != key
    assert access.Access().target_key(KEYED) is None


def test_serving_and_canary_pods_get_the_key_from_the_targets_secret() -> None:
    for deploy in (b.build_serving_deployment(KEYED), b.build_canary_deployment(KEYED, 2, "r")):
        env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
        ref = env[c.ENV_TRITON_REPOSITORY_KEY]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "llm-triton-key", "key": c.TRITON_KEY_SECRET_FIELD}
    unkeyed = b.ServingTarget(**{**KEYED.__dict__, "restrict_repository_api": False})
    env = b.build_serving_deployment(unkeyed)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert c.ENV_TRITON_REPOSITORY_KEY not in {e["name"] for e in env}


def test_the_first_tick_creates_secret_and_policies_before_the_canary() -> None:
    kube = CreatingKube()
    req = ex.RolloutRequest(target=KEYED, run="r", version=1, prompts=[], max_latency_ms=1, trainer_image="t",
                            owner=None, elapsed_s=0.0, access=ACCESS)
    ex.rollout_tick(kube, req)
    (secret,) = kube.created
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "llm-triton-key"
    assert secret["stringData"] == {c.TRITON_KEY_SECRET_FIELD: ACCESS.target_key(KEYED)}
    assert {k for k in kube.objs} == {("NetworkPolicy", "llm-serving"), ("NetworkPolicy", "llm-canary"),
                                      ("Deployment", "llm-canary")}


def _rules(policy: dict[str, Any]) -> list[tuple[list[Any], set[int]]]:
    return [(r["from"], {p["port"] for p in r["ports"]}) for r in policy["spec"]["ingress"]]


def test_network_policies_open_inference_to_clients_and_port_8000_to_the_operator() -> None:
    serving, canary = access.build_network_policies(KEYED, ACCESS)
    assert serving["spec"]["podSelector"]["matchLabels"]["kiln.dev/role"] == "serving"
    operator = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "kiln",
                                                "app.kubernetes.io/component": "operator"}},
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kiln-system"}}}
    (clients, client_ports), (op, op_ports) = _rules(serving)
    assert clients[0] == {"podSelector": {}} and clients[1]["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "apps"]
    assert client_ports == {8000, 8001, 8002} and op == [operator] and op_ports == {8000}
    (gate, _), (op, op_ports) = _rules(canary)
    assert gate == [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "kiln",
                                                     "kiln.dev/serving-target": "llm"}}}]
    assert op == [operator] and op_ports == {8000}
