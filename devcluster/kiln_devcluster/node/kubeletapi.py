"""The slice of the kubelet HTTPS API the API server proxies to: container logs (``kubectl logs``).

``GET /containerLogs/{namespace}/{pod}/{container}`` with ``follow``, ``tailLines``, ``previous``
and ``limitBytes``. The serving certificate is issued by the cluster CA (pki/ca.crt) for the node
IP. Client certificates are not checked: the port only listens on the node bridge of a dev cluster.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogTarget:
    """Where one container's logs are and whether more may come."""

    current: Path
    """Log file of the current (or last) run."""
    previous: Path
    """Log file of the run before."""
    running: Callable[[], bool]
    """True while the container process is alive (follow keeps streaming)."""


Lookup = Callable[[str, str, str], "LogTarget | None"]


def tail(data: bytes, lines: int | None) -> bytes:
    """The last ``lines`` lines of ``data`` (all of it for None; a missing final newline still counts)."""
    if lines is None:
        return data
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


def _handler(lookup: Lookup) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("kubelet api: " + fmt, *args)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            if url.path == "/healthz":
                self._send(200, b"ok")
                return
            parts = url.path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "containerLogs":
                self._send(404, b"not found")
                return
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            target = lookup(parts[1], parts[2], parts[3])
            if target is None:
                self._send(404, f'container "{parts[3]}" in pod "{parts[2]}" not found'.encode())
                return
            previous = q.get("previous") in ("true", "1")
            path = target.previous if previous else target.current
            if not path.exists():
                what = "previous terminated container" if previous else "container"
                self._send(400, f'{what} "{parts[3]}" in pod "{parts[2]}" has no logs'.encode())
                return
            try:
                lines = int(q["tailLines"]) if "tailLines" in q else None
                limit = int(q["limitBytes"]) if "limitBytes" in q else None
            except ValueError:
                self._send(400, b"tailLines and limitBytes must be integers")
                return
            body = tail(path.read_bytes(), lines)
            if limit is not None:
                body = body[:limit]
            if q.get("follow") in ("true", "1") and not previous:
                self._follow(path, body, target)
            else:
                self._send(200, body)

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _follow(self, path: Path, first: bytes, target: LogTarget) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            offset = path.stat().st_size
            try:
                self._chunk(first)
                with open(path, "rb") as f:
                    f.seek(offset)
                    while True:
                        alive = target.running()
                        data = f.read(65536)
                        if data:
                            self._chunk(data)
                        elif not alive:
                            break
                        else:
                            time.sleep(0.2)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass

        def _chunk(self, data: bytes) -> None:
            if data:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

    return Handler


class KubeletServer:
    """HTTPS server on (node_ip, port) in a background thread."""

    def __init__(self, host: str, port: int, cert: Path, key: Path, lookup: Lookup) -> None:
        self.httpd = ThreadingHTTPServer((host, port), _handler(lookup))
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="kubelet-api", daemon=True)

    def start(self) -> KubeletServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serving_cert(pki_dir: Path, node_name: str, node_ip: str) -> tuple[Path, Path]:
    """The kubelet serving certificate for ``node_ip`` (issued once by the cluster CA)."""
    from kiln_devcluster.pki import CertSpec, Pki, issue

    pki = Pki(pki_dir)
    name = f"kubelet-{node_name}"
    if not (pki.crt(name).exists() and pki.key(name).exists()):
        issue(pki, CertSpec(name, f"system:node:{node_name}", groups=("system:nodes",),
                            sans=(node_ip, node_name), server=True))
    return pki.crt(name), pki.key(name)
