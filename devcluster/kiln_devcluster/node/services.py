"""From Services + EndpointSlices to what the node needs: proxy routes and hosts-file names (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kiln_devcluster.node.hosts import ServiceAddr


@dataclass(frozen=True)
class Route:
    """One ClusterIP:port the node proxies, and the ready backends behind it."""

    cluster_ip: str
    """The Service's ClusterIP (bound on the host)."""
    port: int
    """Service port."""
    backends: tuple[tuple[str, int], ...]
    """Ready endpoints (ip, targetPort), sorted."""
    service: str
    """namespace/name, for logs."""


def _slices_by_service(slices: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    out: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for s in slices:
        meta = s.get("metadata", {})
        svc = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if svc:
            out.setdefault((meta.get("namespace", ""), svc), []).append(s)
    return out


def _ready(endpoint: Mapping[str, Any]) -> bool:
    # An absent "ready" means ready (EndpointSlice API semantics).
    return (endpoint.get("conditions") or {}).get("ready") is not False


def _endpoints(slices: list[Mapping[str, Any]], port_name: str) -> list[tuple[str, int]]:
    out = set()
    for s in slices:
        if s.get("addressType", "IPv4") != "IPv4":
            continue
        ports = [p for p in s.get("ports") or [] if (p.get("name") or "") == port_name
                 and (p.get("protocol") or "TCP") == "TCP"]
        for ep in s.get("endpoints") or []:
            if not _ready(ep):
                continue
            for p in ports:
                for addr in ep.get("addresses") or []:
                    out.add((addr, int(p["port"])))
    return sorted(out)


def _with_slices(services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]]
                 ) -> list[tuple[Mapping[str, Any], str, list[Mapping[str, Any]]]]:
    """(service, clusterIP or "None", its EndpointSlices) for every non-ExternalName Service."""
    by_svc = _slices_by_service(slices)
    out = []
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec") or {}
        if spec.get("type") != "ExternalName":
            out.append((svc, spec.get("clusterIP") or "None", by_svc.get((meta["namespace"], meta["name"]), [])))
    return out


def routes(services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]]) -> list[Route]:
    """Every TCP port of every ClusterIP Service with its ready backends (possibly none)."""
    out = []
    for svc, ip, own in _with_slices(services, slices):
        if ip == "None":
            continue
        for port in svc["spec"].get("ports") or []:
            if (port.get("protocol") or "TCP") == "TCP":
                name = f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"
                out.append(Route(ip, int(port["port"]), tuple(_endpoints(own, port.get("name") or "")), name))
    return out


def service_addrs(services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]]) -> list[ServiceAddr]:
    """Names for the hosts files: ClusterIP Services by their IP, headless ones by their ready endpoints."""
    out = []
    for svc, ip, own in _with_slices(services, slices):
        meta = svc["metadata"]
        if ip != "None":
            ips: list[str] = [ip]
        else:
            ips = sorted({a for s in own for ep in s.get("endpoints") or [] if _ready(ep)
                          for a in ep.get("addresses") or []})
        if ips:
            out.append(ServiceAddr(meta["name"], meta["namespace"], tuple(ips)))
    return out
