"""``python -m kiln_devcluster.node --kubeconfig .kiln/kubeconfig --name kiln-node-0``"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from kiln_devcluster.node.config import NodeConfig
from kiln_devcluster.paths import StatePaths


def parse_args(argv: list[str]) -> NodeConfig:
    state = StatePaths.from_env()
    d = NodeConfig()
    p = argparse.ArgumentParser(prog="kiln_devcluster.node", description="kiln's process node (kubelet stand-in)")
    p.add_argument("--kubeconfig", default=str(state.kubeconfig), help="admin kubeconfig")
    p.add_argument("--name", default=d.name, help="Node name")
    p.add_argument("--node-ip", default=d.node_ip, help="InternalIP = bridge address = pods' gateway")
    p.add_argument("--bridge", default=d.bridge, help="bridge the pod veths join")
    p.add_argument("--pod-cidr", default=d.pod_cidr, help="pod address range")
    p.add_argument("--cpu", default=d.cpu, help="advertised cpu capacity")
    p.add_argument("--memory", default=d.memory, help="advertised memory capacity")
    p.add_argument("--gpus", type=int, default=d.gpus, help="advertised nvidia.com/gpu capacity")
    p.add_argument("--kubelet-port", type=int, default=d.kubelet_port, help="kubelet API (logs) port")
    p.add_argument("--backoff-initial", type=float, default=d.backoff_initial, help="first crash back-off (s)")
    p.add_argument("--backoff-max", type=float, default=d.backoff_max, help="longest crash back-off (s)")
    p.add_argument("--images", default=str(d.images_file), help="image -> runtime rules (images.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The informers log their own reconnects; urllib3 would add three lines per refused connection.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    return NodeConfig(name=a.name, kubeconfig=a.kubeconfig, node_ip=a.node_ip, bridge=a.bridge,
                      pod_cidr=a.pod_cidr, cpu=a.cpu, memory=a.memory, gpus=a.gpus, kubelet_port=a.kubelet_port,
                      state_dir=state.root / "node", pki_dir=state.pki, images_file=Path(a.images),
                      backoff_initial=a.backoff_initial, backoff_max=a.backoff_max)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    from kiln_devcluster.node import netns
    from kiln_devcluster.node.agent import ProcessNode

    if not netns.bridge_exists(cfg.bridge):
        logging.error("bridge %s does not exist: start the node through `kiln_devcluster.cli up`", cfg.bridge)
        return 2
    node = ProcessNode(cfg)
    # SIGTERM/SIGINT: stop pods, remove netns and addresses, then exit (cluster-down relies on it).
    signal.signal(signal.SIGTERM, lambda *_: node.stop.set())
    signal.signal(signal.SIGINT, lambda *_: node.stop.set())
    try:
        node.run()
    finally:
        node.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
