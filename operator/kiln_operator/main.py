"""Entry point of the kiln operator: ``kiln-operator`` (or ``kopf run -m kiln_operator.main``)."""

from __future__ import annotations

import http.server
import logging
import os
import sys
import threading
from typing import Any

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server

from kiln_operator import handlers, leader
from kiln_operator.kube import Kube


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _api_client() -> client.ApiClient:
    """The client the handlers use: the pod's ServiceAccount in a cluster, else $KUBECONFIG (read now,
    not at import time as the kubernetes package's default does)."""
    if _in_cluster():
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own connection, from the same source as _api_client."""
    if _in_cluster():
        return kopf.login_with_service_account(settings=settings, **kwargs)
    return kopf.login_with_kubeconfig(settings=settings, **kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    """Every operator setting in one place (non-defaults commented)."""
    # Keep kopf's bookkeeping in annotations: the CRD's status schema is structural and would prune
    # kopf's own status fields, which makes kopf re-run handlers forever.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kiln.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kiln.dev")
    settings.persistence.finalizer = "kiln.dev/operator"
    # kopf's own sync handlers (startup, delete) need few threads: reconciles run in the Driver's pool.
    settings.execution.max_workers = int(os.environ.get("KILN_MAX_WORKERS", "4"))
    # One replica only: peering is not leader election (research/reliability.md); no peering objects.
    settings.peering.standalone = True
    # No CRD/namespace scanning: the chart installs the CRD first, and RBAC stays without CRD reads.
    settings.scanning.disabled = True
    # Reconnect watches that went quiet (kopf >= 1.44 behaviour, made explicit).
    settings.watching.inactivity_timeout = 300
    # Events are for humans; keep them short and never let posting them fail a handler.
    settings.posting.level = logging.INFO
    handlers.set_kube(Kube(_api_client()))
    port = int(os.environ.get("KILN_METRICS_PORT", "8080"))
    if port:
        start_http_server(port)
        logger.info("metrics on :%d/metrics", port)


class _StandbyHealth:
    """/healthz on the kopf liveness port while waiting for the Lease (kopf binds it once leading),
    so the kubelet does not restart a healthy standby."""

    def __init__(self, port: int) -> None:
        class Ok(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"standby\n")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Ok)
        threading.Thread(target=self.server.serve_forever, name="standby-health", daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _lead(cfg: leader.LeaseConfig) -> leader.LeaseElector:
    """Block until this replica holds the Lease; then keep renewing it in the background (losing it
    ends the process: only one replica may reconcile)."""
    elector = leader.LeaseElector(client.CoordinationV1Api(_api_client()), cfg)
    health_port = os.environ.get("KILN_HEALTH_PORT")
    health = _StandbyHealth(int(health_port)) if health_port else None
    try:
        elector.acquire()
    finally:
        if health is not None:
            health.close()
    threading.Thread(target=elector.renew_forever, args=(leader.exit_lost,), name="lease-renew", daemon=True).start()
    return elector


def main() -> int:
    """Run the operator in all namespaces (or KILN_NAMESPACE) until SIGTERM; with
    KILN_LEADER_ELECTION on, only while holding the Lease (leader.py)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lease = leader.config_from_env()
    port = int(os.environ.get("KILN_METRICS_PORT", "8080"))
    if lease and port:
        # A standby serves /metrics too (the Service selects every replica); kopf's startup handler
        # must then not bind the port a second time.
        start_http_server(port)
        os.environ["KILN_METRICS_PORT"] = "0"
    elector = _lead(lease) if lease else None
    args = ["run", "--standalone", "-m", "kiln_operator.handlers", "-m", "kiln_operator.main"]
    ns = os.environ.get("KILN_NAMESPACE")
    args += ["--namespace", ns] if ns else ["--all-namespaces"]
    health = os.environ.get("KILN_HEALTH_PORT")
    if health:
        args += ["--liveness", f"http://0.0.0.0:{health}/healthz"]
    if os.environ.get("KILN_LOG_LEVEL", "INFO") == "DEBUG":
        args.append("--verbose")
    elif os.environ.get("KILN_LOG_LEVEL") in ("WARNING", "ERROR"):
        args.append("--quiet")
    sys.argv = ["kopf", *args]
    from kopf.cli import main as kopf_main  # kopf's CLI sets up logging and signal handling

    try:
        kopf_main()
    finally:
        if elector is not None:
            elector.release()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
