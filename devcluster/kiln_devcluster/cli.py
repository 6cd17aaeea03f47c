"""``python -m kiln_devcluster.cli up|down|status`` (also ``kiln-dev``)."""

from __future__ import annotations

import argparse
import sys

from kiln_devcluster import controlplane
from kiln_devcluster.images.nodes import ensure_in_nodes
from kiln_devcluster.nodes import node_specs
from kiln_devcluster.paths import StatePaths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kiln-dev", description="The embedded single-machine Kubernetes.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start the cluster (idempotent)")
    p_up.add_argument("--node-ready-timeout", type=float, default=90.0, help="seconds to wait for the node")
    p_down = sub.add_parser("down", help="stop everything `up` started")
    p_down.add_argument("--purge", action="store_true", help="also delete the state directory (.kiln)")
    sub.add_parser("status", help="show which components are up")
    sub.add_parser("sockets", help="print each real node's containerd socket, one a line (to import images)")
    sub.add_parser("images", help="build the project's changed images and import them into every real node")
    args = parser.parse_args(argv)

    paths = StatePaths.from_env()
    try:
        if args.cmd == "up":
            controlplane.up(paths, controlplane.UpOptions(node_ready_timeout_s=args.node_ready_timeout))
        elif args.cmd == "down":
            controlplane.down(paths, purge=args.purge)
        elif args.cmd == "images":
            ensure_in_nodes(controlplane.context(paths))
        elif args.cmd == "sockets":
            print("\n".join(str(n.containerd_socket) for n in node_specs(paths)))
        else:
            return 0 if controlplane.status(paths) else 3
    except (RuntimeError, TimeoutError, FileNotFoundError, ValueError) as err:
        print(f"[kiln-dev] error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
