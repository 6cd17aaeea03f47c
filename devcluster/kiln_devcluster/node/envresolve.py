"""Turn a container's ``env``/``envFrom`` into the process environment, as the kubelet does.

The order is the kubelet's: service-link variables first, then ``envFrom`` sources, then ``env``
entries (later entries win, and ``$(VAR)`` in an ``env`` value refers to what is defined so far).
Lookups of Secrets and ConfigMaps are injected, so this module is pure and unit-tested.
A missing object or key raises :class:`ConfigError`, which the node reports as
``CreateContainerConfigError`` (the kubelet's reason) unless the reference is ``optional``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from kiln_devcluster.node.expand import expand

Lookup = Callable[[str, str], "dict[str, str] | None"]
"""(namespace, name) -> the object's data (base64-decoded for Secrets), or None when it does not exist."""

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ConfigError(Exception):
    """A container cannot be configured (missing Secret/ConfigMap or key, bad fieldRef)."""


def service_link_env(services: list[dict[str, Any]], namespace: str) -> dict[str, str]:
    """``<SVC>_SERVICE_HOST`` / ``_SERVICE_PORT`` / ``_SERVICE_PORT_<NAME>`` for ClusterIP Services.

    ``services`` are Service objects of the pod's namespace plus ``default/kubernetes``; headless
    ones get no variables (they have no single address), exactly like the kubelet.
    """
    env: dict[str, str] = {}
    for svc in services:
        meta, spec = svc.get("metadata", {}), svc.get("spec", {})
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        is_master = meta.get("namespace") == "default" and meta.get("name") == "kubernetes"
        if meta.get("namespace") != namespace and not is_master:
            continue
        prefix = meta.get("name", "").upper().replace("-", "_")
        ports = spec.get("ports") or []
        if not ports:
            continue
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
    return env


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """The value of a downward-API ``fieldRef.fieldPath`` for ``pod``; raises ConfigError on an unknown path."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {}) or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
    }
    if path in simple:
        return str(simple[path])
    if path == "status.podIPs":
        return ",".join(p["ip"] for p in status.get("podIPs") or [])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ConfigError(f"unsupported fieldRef.fieldPath {path!r}")


def resolve_env(
    container: Mapping[str, Any],
    pod: Mapping[str, Any],
    base: Mapping[str, str],
    get_secret: Lookup,
    get_configmap: Lookup,
) -> dict[str, str]:
    """The environment of ``container`` (``base`` = service links and node-provided variables)."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = dict(base)
    for source in container.get("envFrom") or []:
        env.update(_env_from(source, namespace, get_secret, get_configmap))
    for entry in container.get("env") or []:
        name = entry["name"]
        if "valueFrom" in entry and entry["valueFrom"] is not None:
            value = _value_from(entry["valueFrom"], name, container, pod, get_secret, get_configmap)
            if value is None:
                continue  # an optional reference that is absent defines nothing
            env[name] = value
        else:
            env[name] = expand(entry.get("value") or "", env)
    return env


def _env_from(source: Mapping[str, Any], namespace: str, get_secret: Lookup, get_configmap: Lookup) -> dict[str, str]:
    prefix = source.get("prefix") or ""
    for kind, key, lookup in (("Secret", "secretRef", get_secret), ("ConfigMap", "configMapRef", get_configmap)):
        ref = source.get(key)
        if not ref:
            continue
        data = lookup(namespace, ref["name"])
        if data is None:
            if ref.get("optional"):
                return {}
            raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found (envFrom.{key})')
        # Keys that are not valid variable names are skipped, as the kubelet does (it only warns).
        return {prefix + k: v for k, v in data.items() if _ENV_NAME.match(prefix + k)}
    raise ConfigError("envFrom entry has neither secretRef nor configMapRef")


def _value_from(
    value_from: Mapping[str, Any],
    name: str,
    container: Mapping[str, Any],
    pod: Mapping[str, Any],
    get_secret: Lookup,
    get_configmap: Lookup,
) -> str | None:
    namespace = pod["metadata"]["namespace"]
    for kind, key, lookup in (
        ("secret", "secretKeyRef", get_secret),
        ("configmap", "configMapKeyRef", get_configmap),
    ):
        ref = value_from.get(key)
        if not ref:
            continue
        data = lookup(namespace, ref["name"])
        optional = bool(ref.get("optional"))
        if data is None:
            if optional:
                return None
            raise ConfigError(f'{kind} "{ref["name"]}" not found (env {name}: valueFrom.{key})')
        if ref["key"] not in data:
            if optional:
                return None
            raise ConfigError(
                f'couldn\'t find key {ref["key"]} in {kind.capitalize()} {namespace}/{ref["name"]}'
                f" (env {name}: valueFrom.{key})"
            )
        return data[ref["key"]]
    if value_from.get("fieldRef"):
        return field_value(pod, value_from["fieldRef"]["fieldPath"])
    if value_from.get("resourceFieldRef"):
        return _resource_value(value_from["resourceFieldRef"], container)
    raise ConfigError(f"env {name}: valueFrom has no supported source")


def _resource_value(ref: Mapping[str, Any], container: Mapping[str, Any]) -> str:
    """``limits.cpu`` etc. as declared on the container ("0" when undeclared: nothing is enforced here)."""
    section, _, resource = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(section) or {}).get(resource)
    return str(value) if value is not None else "0"
