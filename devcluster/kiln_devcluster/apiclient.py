"""Minimal admin access to the API server over HTTPS (no client library: `up` stays quick)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from kiln_devcluster.components import API_PORT, Ctx


def _admin_tls(ctx: Ctx) -> ssl.SSLContext:
    tls = ssl.create_default_context(cafile=str(ctx.pki.ca_crt))
    tls.load_cert_chain(str(ctx.pki.crt("admin")), str(ctx.pki.key("admin")))
    return tls


def get_json(ctx: Ctx, path: str) -> dict[str, Any] | None:
    """GET an API path as admin; None on 404."""
    tls = _admin_tls(ctx)
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{API_PORT}{path}", timeout=5, context=tls) as resp:
            doc: dict[str, Any] = json.load(resp)
            return doc
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def delete(ctx: Ctx, path: str) -> bool:
    """DELETE an API path as admin; False when it was already gone."""
    tls = _admin_tls(ctx)
    req = urllib.request.Request(f"https://127.0.0.1:{API_PORT}{path}", method="DELETE")
    try:
        with urllib.request.urlopen(req, timeout=5, context=tls):
            return True
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return False
        raise
