"""`python -m kiln_devcluster.images build|import|sizes`: the project's images for the dev cluster.

    build [NAME ...] [--force]          build (or skip, when unchanged) the images and their bases
    import --address SOCK [NAME ...]    build if needed, then import into that containerd (k8s.io)
    sizes                               each built image's size

NAME is one of base-python, base-triton, operator, trainer, serving; default: all.
"""

from __future__ import annotations

import argparse
import sys
import time

from kiln_devcluster.images.build import build_all, image_id
from kiln_devcluster.images.containerd import NAMESPACE, image_size, import_images
from kiln_devcluster.images.progress import CommandFailed
from kiln_devcluster.images.specs import select


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kiln_devcluster.images", description=__doc__.splitlines()[0])
    subs = p.add_subparsers(dest="command", required=True)
    b = subs.add_parser("build", help="build the images (skips unchanged ones)")
    b.add_argument("names", nargs="*", help="images to build (default: all)")
    b.add_argument("--force", action="store_true", help="rebuild even when the key is unchanged")
    i = subs.add_parser("import", help="build if needed, then import into a containerd")
    i.add_argument("names", nargs="*", help="images to import (default: operator, trainer, serving)")
    i.add_argument("--address", required=True, help="containerd socket, e.g. /run/containerd/containerd.sock")
    i.add_argument("--namespace", default=NAMESPACE, help="containerd namespace (the kubelet's is k8s.io)")
    subs.add_parser("sizes", help="sizes of the built images")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    start = time.monotonic()
    try:
        specs = select(getattr(args, "names", None) or None)
        if args.command == "sizes":
            for s in specs:
                size = f"{image_size(s.ref) / 1e6:8.0f} MB" if image_id(s.ref) else "(not built)"
                print(f"{s.name:12s} {s.ref:45s} {size}")
            return 0
        built = build_all(specs, force=getattr(args, "force", False))
        if args.command == "import":
            import_images([b for b, s in zip(built, specs, strict=True) if s.product],
                          args.address, args.namespace)
    except (CommandFailed, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"images: error: {e}", file=sys.stderr)
        return 1
    print(f"[images] {args.command}: all done in {time.monotonic() - start:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
