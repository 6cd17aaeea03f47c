"""Progress towards the TrainingRun's status, straight from the trainer.

The operator never reads tenants' storage; instead rank 0 patches its run's progress ConfigMap
(`<run>-progress`) through the API server, as the pod's ServiceAccount (the operator gives each run a
Role that allows `patch` on that one ConfigMap, nothing else), and the operator validates the record
and copies it into `status.progress`. Plain HTTPS with the mounted token: no Kubernetes client
library in the trainer image.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

from kiln_api import contract
from kiln_api.trainingrun import progress_patch

log = logging.getLogger("kiln.train")
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class StatusProgress:
    """A progress callback that patches status.progress at most every `min_interval_s` seconds."""

    def __init__(self, name: str, namespace: str, host: str, port: str, sa_dir: Path = SA_DIR,
                 min_interval_s: float = 10.0) -> None:
        self.url = f"https://{host}:{port}/api/v1/namespaces/{namespace}/configmaps/{contract.progress_configmap(name)}"
        self.sa_dir = sa_dir
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._ctx = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))
        self._warned = False

    def __call__(self, progress: dict[str, Any]) -> None:
        final = progress.get("eta_seconds") == 0
        if not final and time.monotonic() - self._last < self.min_interval_s:
            return
        self._last = time.monotonic()
        record = progress_patch({k: _rounded(k, v) for k, v in progress.items() if v is not None})
        body = json.dumps({"data": {contract.PROGRESS_DATA_KEY: json.dumps(record["status"]["progress"])}}).encode()
        token = (self.sa_dir / "token").read_text().strip()  # re-read: projected tokens rotate
        req = urllib.request.Request(self.url, data=body, method="PATCH", headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"})
        try:
            with urllib.request.urlopen(req, timeout=5, context=self._ctx) as resp:
                resp.read()
        except OSError as e:  # progress is best effort: never stop training for it
            if not self._warned:
                log.warning("cannot report progress to %s: %s", self.url, e)
                self._warned = True


def _rounded(key: str, value: Any) -> Any:
    """Status is read by people (kubectl get tr): 4 significant decimals of loss, whole tokens/s and seconds."""
    if key == "loss" and isinstance(value, float):
        return round(value, 4)
    if key in ("tokens_per_s", "eta_seconds") and isinstance(value, float):
        return round(value)
    return value


def status_progress_from_env(env: dict[str, str] | None = None, sa_dir: Path = SA_DIR) -> StatusProgress | None:
    """The sink when running in a kiln pod (run identity in env, a ServiceAccount token mounted)."""
    e = os.environ if env is None else env
    name, ns = e.get(contract.ENV_RUN_NAME), e.get(contract.ENV_RUN_NAMESPACE)
    host, port = e.get("KUBERNETES_SERVICE_HOST"), e.get("KUBERNETES_SERVICE_PORT", "443")
    if not (name and ns and host) or not (sa_dir / "token").exists():
        return None
    return StatusProgress(name, ns, host, port, sa_dir)
