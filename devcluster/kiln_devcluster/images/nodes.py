"""The project's images in every real node: built when their content changed, imported where missing.

`up` calls `ensure_in_nodes` last (also when the cluster was already up), so a code change reaches
the pods at the next `make cluster-up`, `make demo` or integration session: a warm run costs
seconds (content keys, `ctr images ls`), a code change the thin code layer's build and import.
"""

from __future__ import annotations

import time

from kiln_devcluster.images.build import build_all
from kiln_devcluster.images.containerd import import_into_nodes
from kiln_devcluster.images.specs import select
from kiln_devcluster.nodes import NodeSpec


def ensure_in_nodes(nodes: list[NodeSpec]) -> None:
    start = time.monotonic()
    specs = select(None)
    built = build_all(specs)
    product = [b for b, s in zip(built, specs, strict=True) if s.product]
    import_into_nodes(product, [(str(n.containerd_socket), n.cache) for n in nodes])
    print(f"[kiln-dev] images built and in {len(nodes)} node(s) ({time.monotonic() - start:.1f}s)", flush=True)
