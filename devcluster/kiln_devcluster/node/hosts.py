"""Per-pod /etc/hosts: the node's replacement for cluster DNS.

There is no CoreDNS in the embedded cluster, so every pod gets a hosts file that lists
the pod itself, each Service (``svc``, ``svc.ns``, ``svc.ns.svc``, ``svc.ns.svc.cluster.local``; the
short forms only inside the Service's namespace, as the DNS search path would give), and the
stable names of pods that set ``hostname`` + ``subdomain`` (PyTorchJob, Indexed Jobs):
``<hostname>.<subdomain>.<ns>.svc.cluster.local``. Rendering is pure; the node rewrites files in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class PodAddr:
    """Address facts of one pod that has an IP."""

    name: str
    """metadata.name"""
    namespace: str
    """metadata.namespace"""
    ip: str
    """status.podIP"""
    hostname: str
    """spec.hostname, or the pod name (cut to 63 characters) when unset."""
    subdomain: str = ""
    """spec.subdomain (a headless Service name) or empty."""

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any], ip: str) -> PodAddr:
        meta, spec = pod["metadata"], pod.get("spec", {})
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            ip=ip,
            hostname=(spec.get("hostname") or meta["name"])[:63],
            subdomain=spec.get("subdomain") or "",
        )


@dataclass(frozen=True)
class ServiceAddr:
    """The addresses one Service name resolves to: its ClusterIP, or for headless ones the endpoint IPs."""

    name: str
    """metadata.name"""
    namespace: str
    """metadata.namespace"""
    ips: tuple[str, ...]
    """ClusterIP, or the ready endpoint addresses of a headless Service (sorted)."""


def _service_names(svc: ServiceAddr, pod_namespace: str) -> list[str]:
    names = [f"{svc.name}.{svc.namespace}", f"{svc.name}.{svc.namespace}.svc",
             f"{svc.name}.{svc.namespace}.svc.{CLUSTER_DOMAIN}"]
    if svc.namespace == pod_namespace:
        names.insert(0, svc.name)
    return names


def _pod_names(pod: PodAddr, pod_namespace: str) -> list[str]:
    # Every pod gets its DNS pod record <a-b-c-d>.<ns>.pod.cluster.local, which also makes reverse
    # lookups of pod IPs work (gloo/c10d ask for the peer's name).
    record = f"{pod.ip.replace('.', '-')}.{pod.namespace}.pod.{CLUSTER_DOMAIN}"
    if not pod.subdomain:
        return [record]
    base = f"{pod.hostname}.{pod.subdomain}.{pod.namespace}"
    names = [base, f"{base}.svc", f"{base}.svc.{CLUSTER_DOMAIN}"]
    if pod.namespace == pod_namespace:
        names.insert(0, f"{pod.hostname}.{pod.subdomain}")
    return names + [record]


def render_hosts(own: PodAddr, pods: Iterable[PodAddr], services: Iterable[ServiceAddr]) -> str:
    """The hosts file of pod ``own``; deterministic, so unchanged inputs give identical bytes."""
    own_names = _pod_names(own, own.namespace)
    # The pod's own hostname comes first after the FQDN, so `hostname -f` and gethostbyaddr agree.
    own_line = own_names[:-1][-1:] + [own.hostname] + own_names[:-1][:-1] + own_names[-1:]
    lines: list[tuple[str, list[str]]] = []
    for pod in pods:
        if (pod.name, pod.namespace) != (own.name, own.namespace):
            lines.append((pod.ip, _pod_names(pod, own.namespace)))
    for svc in services:
        lines.extend((ip, _service_names(svc, own.namespace)) for ip in svc.ips)
    out = [
        "# Kubernetes-managed hosts file (kiln process node); rewritten as pods and services change.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{own.ip}\t{' '.join(own_line)}",
    ]
    out.extend(f"{ip}\t{' '.join(names)}" for ip, names in sorted(lines, key=lambda item: (item[1][0], item[0])))
    return "\n".join(out) + "\n"
