"""Materialize a pod's volumes as host folders that the launch script bind-mounts.

Each volume becomes ``<pod dir>/volumes/<name>/``. Contents are replaced file by file inside that
folder (never the folder itself), so a bind mount taken earlier keeps seeing refreshed tokens.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from kiln_devcluster.node.envresolve import ConfigError, field_value

TOKEN_SECONDS = 3600
REFRESH_FRACTION = 0.8  # the kubelet refreshes a projected token at 80 % of its lifetime


class Source(Protocol):
    def get_secret_bytes(self, namespace: str, name: str) -> dict[str, bytes] | None: ...
    def get_configmap_bytes(self, namespace: str, name: str) -> dict[str, bytes] | None: ...
    def request_token(self, pod: dict[str, Any], service_account: str, audience: str | None,
                      expiration: int) -> str: ...


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    tmp.replace(path)


class VolumeBuilder:
    """Builds and refreshes the volumes of one pod."""

    def __init__(self, pod: dict[str, Any], pod_dir: Path, source: Source, state_dir: Path) -> None:
        self.pod = pod
        self.root = pod_dir / "volumes"
        self.source = source
        self.state_dir = state_dir
        self.namespace = pod["metadata"]["namespace"]
        self._token_due = 0.0

    def host_paths(self) -> dict[str, Path]:
        """Volume name -> host path to bind; builds every volume (raises ConfigError on a missing source)."""
        paths = {}
        for vol in self.pod["spec"].get("volumes") or []:
            paths[vol["name"]] = self._build(vol)
        return paths

    def refresh(self) -> None:
        """Rewrite ConfigMap/Secret/downward-API contents (the kubelet syncs them into running pods
        too); projected tokens only once 80 % of their lifetime has passed. A source that vanished
        meanwhile leaves the last contents in place."""
        tokens = bool(self._token_due) and time.monotonic() >= self._token_due
        for vol in self.pod["spec"].get("volumes") or []:
            if any(vol.get(k) for k in ("configMap", "secret", "downwardAPI", "projected")):
                try:
                    self._build(vol, tokens=tokens)
                except ConfigError:
                    pass

    def _build(self, vol: Mapping[str, Any], tokens: bool = True) -> Path:
        name = vol["name"]
        target: Path = self.root / name
        if vol.get("hostPath"):
            path: Path = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") in ("DirectoryOrCreate",):
                path.mkdir(parents=True, exist_ok=True)
            return path
        if vol.get("persistentVolumeClaim"):
            # No storage provisioner here: a claim is a folder on the node that outlives its pods.
            path = self.state_dir / "claims" / self.namespace / vol["persistentVolumeClaim"]["claimName"]
            path.mkdir(parents=True, exist_ok=True)
            return path
        target.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in vol:
            return target
        if vol.get("configMap"):
            self._keyed("ConfigMap", vol["configMap"], target, self.source.get_configmap_bytes)
        elif vol.get("secret"):
            ref = dict(vol["secret"], name=vol["secret"]["secretName"])
            self._keyed("Secret", ref, target, self.source.get_secret_bytes)
        elif vol.get("downwardAPI"):
            self._downward(vol["downwardAPI"].get("items") or [], target)
        elif vol.get("projected"):
            self._projected(vol["projected"], target, tokens)
        else:
            kinds = sorted(k for k in vol if k != "name")
            raise ConfigError(f"volume {name}: unsupported volume source {kinds} on the kiln process node")
        return target

    def _keyed(self, kind: str, ref: Mapping[str, Any], target: Path, lookup: Any) -> None:
        data = lookup(self.namespace, ref["name"])
        if data is None:
            if ref.get("optional"):
                return
            raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found')
        mode = ref.get("defaultMode") or 0o644
        items = ref.get("items")
        if not items:
            items = [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind} {self.namespace}/{ref["name"]} has no key "{item["key"]}"')
            write_file(target / item["path"], data[item["key"]], item.get("mode") or mode)

    def _downward(self, items: list[Mapping[str, Any]], target: Path) -> None:
        for item in items:
            if item.get("fieldRef"):
                value = field_value(self.pod, item["fieldRef"]["fieldPath"])
            else:
                raise ConfigError(f"downwardAPI item {item.get('path')}: only fieldRef is supported")
            write_file(target / item["path"], value.encode(), item.get("mode") or 0o644)

    def _projected(self, projected: Mapping[str, Any], target: Path, tokens: bool) -> None:
        for src in projected.get("sources") or []:
            if src.get("serviceAccountToken"):
                if not tokens:
                    continue
                sat = src["serviceAccountToken"]
                seconds = int(sat.get("expirationSeconds") or TOKEN_SECONDS)
                sa = self.pod["spec"].get("serviceAccountName") or "default"
                token = self.source.request_token(self.pod, sa, sat.get("audience"), seconds)
                write_file(target / sat["path"], token.encode(), 0o600)
                self._token_due = time.monotonic() + seconds * REFRESH_FRACTION
            elif src.get("configMap"):
                self._keyed("ConfigMap", src["configMap"], target, self.source.get_configmap_bytes)
            elif src.get("secret"):
                self._keyed("Secret", src["secret"], target, self.source.get_secret_bytes)
            elif src.get("downwardAPI"):
                self._downward(src["downwardAPI"].get("items") or [], target)
