"""Env resolution and $(VAR) expansion of the process node (kubelet semantics)."""

import pytest
from kiln_devcluster.node.envresolve import ConfigError, field_value, resolve_env, service_link_env
from kiln_devcluster.node.expand import expand

POD = {
    "metadata": {"name": "p1", "namespace": "ns1", "uid": "u-1", "labels": {"app": "web"}},
    "spec": {"nodeName": "kiln-node-0", "serviceAccountName": "sa"},
    "status": {"podIP": "10.88.0.7", "hostIP": "10.88.0.1"},
}
SECRETS = {("ns1", "creds"): {"user": "alice", "password": "s3cret"}}
CONFIGS = {("ns1", "cfg"): {"MODE": "fast", "bad key": "x", "LEVEL": "3"}}


def lookup(table):
    return lambda ns, name: table.get((ns, name))


def resolve(container, base=None):
    return resolve_env(container, POD, base or {}, lookup(SECRETS), lookup(CONFIGS))


@pytest.mark.parametrize(
    ("text", "env", "want"),
    [
        ("$(A)-$(B)", {"A": "1", "B": "2"}, "1-2"),
        ("$(MISSING)", {}, "$(MISSING)"),
        ("$$(A)", {"A": "1"}, "$(A)"),
        ("$$", {}, "$"),
        ("cost $5", {}, "cost $5"),
        ("$(A", {"A": "1"}, "$(A"),
        ("end$", {}, "end$"),
        ("--rank=$(RANK) --addr $(MASTER_ADDR):$(MASTER_PORT)", {"RANK": "0", "MASTER_ADDR": "m", "MASTER_PORT": "23456"},
         "--rank=0 --addr m:23456"),
    ],
)
def test_expand(text, env, want):
    assert expand(text, env) == want


def test_env_order_and_sources():
    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
            {"name": "GREETING", "value": "hi $(USER) in $(NS) at $(IP)"},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "LATE", "value": "$(NS)/$(IP)/$(CFG_MODE)"},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        ],
    }
    env = resolve(container, base={"KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    assert env["USER"] == "alice"
    # NS and IP are defined after GREETING, so they stay unexpanded there (kubelet order semantics).
    assert env["GREETING"] == "hi alice in $(NS) at $(IP)"
    assert env["LATE"] == "ns1/10.88.0.7/fast"
    assert env["CFG_MODE"] == "fast" and env["CFG_LEVEL"] == "3"
    assert "CFG_bad key" not in env
    assert env["APP"] == "web"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"


def test_env_overrides_env_from():
    container = {"envFrom": [{"configMapRef": {"name": "cfg"}}], "env": [{"name": "MODE", "value": "slow"}]}
    assert resolve(container)["MODE"] == "slow"


def test_missing_secret_key_names_key_and_env():
    container = {"env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}]}
    with pytest.raises(ConfigError, match=r"couldn't find key token in Secret ns1/creds.*env PW"):
        resolve(container)


def test_missing_secret_object():
    container = {"env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]}
    with pytest.raises(ConfigError, match='secret "nope" not found'):
        resolve(container)


def test_missing_configmap_envfrom():
    with pytest.raises(ConfigError, match='configmap "gone" not found'):
        resolve({"envFrom": [{"configMapRef": {"name": "gone"}}]})


def test_optional_references_define_nothing():
    container = {
        "envFrom": [{"secretRef": {"name": "gone", "optional": True}}],
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nokey", "optional": True}}}],
    }
    assert "X" not in resolve(container)


def test_unknown_field_path():
    with pytest.raises(ConfigError, match="spec.bogus"):
        field_value(POD, "spec.bogus")


def test_service_links():
    services = [
        {"metadata": {"name": "kubernetes", "namespace": "default"},
         "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]}},
        {"metadata": {"name": "my-db", "namespace": "ns1"},
         "spec": {"clusterIP": "10.96.0.9", "ports": [{"name": "pg", "port": 5432}]}},
        {"metadata": {"name": "other", "namespace": "ns2"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 1}]}},
        {"metadata": {"name": "headless", "namespace": "ns1"}, "spec": {"clusterIP": "None", "ports": [{"port": 2}]}},
    ]
    env = service_link_env(services, "ns1")
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["MY_DB_SERVICE_HOST"] == "10.96.0.9" and env["MY_DB_SERVICE_PORT_PG"] == "5432"
    assert not any(k.startswith(("OTHER_", "HEADLESS_")) for k in env)
