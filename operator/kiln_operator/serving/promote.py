"""Promote a gated version inside running Triton pods, through Triton's repository API.

Each serving pod has the model loaded with `version_policy: specific [old]`. Promotion reloads the
model with `specific [new]`: Triton loads the new version next to the old one, switches requests
to it, and unloads the old version once its in-flight requests finish, so clients see no failed
request and no restart. The model config is read back from the pod itself, so the operator needs
no access to the tenant's storage.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from kiln_api import contract as c


class PromoteError(RuntimeError):
    """A pod refused or failed the version swap; the message names the pod address."""


def _request(url: str, body: dict[str, Any] | None = None, timeout: float = 30.0,
             key: str | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key:  # the target's repository-API key (see serving/access.py)
        headers[c.TRITON_KEY_HEADER] = key
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except (urllib.error.URLError, OSError) as e:
        raise PromoteError(f"{url}: {e}") from e


def with_version(config: dict[str, Any], version: int) -> dict[str, Any]:
    """A copy of a Triton model config (JSON form) pinned to one version."""
    out = dict(config)
    out["version_policy"] = {"specific": {"versions": [version]}}
    return out


def version_ready(address: str, model: str, version: int) -> bool:
    try:
        status, _ = _request(f"http://{address}/v2/models/{model}/versions/{version}/ready", timeout=5)
    except PromoteError:
        return False
    return status == 200


def promote_pod(address: str, model: str, version: int, timeout_s: float = 300.0, key: str | None = None) -> None:
    """Swap the pod at `address` (host:port of Triton's HTTP endpoint) to serve only `version`."""
    status, body = _request(f"http://{address}/v2/models/{model}/config")
    if status != 200:
        raise PromoteError(f"{address}: reading the config of {model} answered {status}: {body[:300]!r}")
    config = with_version(json.loads(body), version)
    status, body = _request(
        f"http://{address}/v2/repository/models/{model}/load",
        {"parameters": {"config": json.dumps(config)}},
        timeout=timeout_s, key=key,
    )
    if status == 403:
        raise PromoteError(f"{address}: the repository API refused the key (403: {body[:200]!r}); the "
                           "target's Secret does not hold the key the operator derives: delete it and the "
                           "serving pods, the next rollout recreates both")
    if status != 200:
        raise PromoteError(f"{address}: loading {model} v{version} answered {status}: {body[:300]!r}")
    deadline = time.monotonic() + timeout_s
    while not version_ready(address, model, version):
        if time.monotonic() > deadline:
            raise PromoteError(f"{address}: {model} v{version} not ready within {timeout_s:.0f}s")
        time.sleep(0.5)
