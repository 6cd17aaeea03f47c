"""The project's images in every real node: built when their content changed, imported where missing.

`up` calls `ensure_in_nodes` last (also when the cluster was already up), so a code change reaches
the pods at the next `make cluster-up`, `make demo` or integration session: a warm run costs
seconds (content keys, `ctr images ls`), a code change the thin code layer's build and import.
"""

from __future__ import annotations

import time
import urllib.parse

from kiln_devcluster import apiclient
from kiln_devcluster.components import Ctx
from kiln_devcluster.images.build import build_all
from kiln_devcluster.images.containerd import config_digest, full_name, import_into_nodes
from kiln_devcluster.images.specs import select
from kiln_devcluster.images.stale import stale_pods
from kiln_devcluster.nodes import node_specs


def ensure_in_nodes(ctx: Ctx) -> None:
    start = time.monotonic()
    nodes = node_specs(ctx.paths)
    specs = select(None)
    built = build_all(specs)
    product = [b for b, s in zip(built, specs, strict=True) if s.product]
    import_into_nodes(product, [(str(n.containerd_socket), n.cache) for n in nodes])
    restart_stale(ctx, {full_name(b.ref): config_digest(b) for b in product})
    print(f"[kiln-dev] images built and in {len(nodes)} node(s) ({time.monotonic() - start:.1f}s)", flush=True)


def restart_stale(ctx: Ctx, current: dict[str, str]) -> None:
    """Delete the controller-owned pods that still run an earlier build (stale.py)."""
    pods = (apiclient.get_json(ctx, "/api/v1/pods") or {}).get("items", [])
    for ns, name, image in stale_pods(pods, current):
        apiclient.delete(ctx, f"/api/v1/namespaces/{urllib.parse.quote(ns)}/pods/{urllib.parse.quote(name)}")
        print(f"[images] restarted {ns}/{name}: it ran an earlier build of {image}", flush=True)
