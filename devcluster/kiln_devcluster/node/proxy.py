"""User-space TCP proxy for ClusterIP Services (there is no kube-proxy and no iptables here).

Each ClusterIP is added to the host's ``lo`` as a /32, so both the host and pods (whose default
route is the node bridge) reach it; a listener on ClusterIP:port forwards each connection to the
next ready backend, round-robin, trying the others when a connect fails. Plain blocking sockets:
one accept thread per listener, two copy threads per connection (dev-cluster traffic is small).
"""

from __future__ import annotations

import errno
import itertools
import logging
import socket
import subprocess
import threading
from collections.abc import Iterable

from kiln_devcluster.node.services import Route

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 3.0


def _copy(src: socket.socket, dst: socket.socket) -> None:
    """Copy until EOF, then pass the EOF on (half-close), so request/response protocols finish."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _Listener:
    def __init__(self, route: Route, sock: socket.socket) -> None:
        self.route = route
        self.sock = sock
        self.counter = itertools.count()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"proxy-{route.cluster_ip}:{route.port}").start()

    def backends(self) -> list[tuple[str, int]]:
        """Backends in round-robin order starting at the next one."""
        b = list(self.route.backends)
        if not b:
            return []
        start = next(self.counter) % len(b)
        return b[start:] + b[:start]

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        except OSError:
            pass
        self.sock.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        for host, port in self.backends():
            try:
                upstream = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
            except OSError:
                continue
            upstream.settimeout(None)
            back = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
            back.start()
            _copy(client, upstream)
            back.join()
            upstream.close()
            break
        client.close()  # no ready backend: refuse, like a Service without endpoints


class ServiceProxy:
    """Owns the listeners and the /32 addresses; :meth:`update` is called with the full route list."""

    def __init__(self, device: str = "lo", host_ips: tuple[str, ...] = ()) -> None:
        self.device = device
        self.host_ips = set(host_ips) | {"127.0.0.1"}
        self.listeners: dict[tuple[str, int], _Listener] = {}
        self.addresses: set[str] = set()
        self.lock = threading.Lock()

    def update(self, routes: Iterable[Route]) -> None:
        with self.lock:
            self._apply(list(routes))

    def _apply(self, routes: list[Route]) -> None:
        wanted = {(r.cluster_ip, r.port): r for r in routes}
        for key in list(self.listeners.keys() - wanted.keys()):
            self.listeners.pop(key).close()
        for ip in {r.cluster_ip for r in routes} - self.addresses:
            self._add_address(ip)
        for key, route in wanted.items():
            if self._host_served(route):
                # The backend is a host process on the same port (e.g. S3 behind manual Endpoints): its
                # 0.0.0.0 listener answers on the ClusterIP already, and a listener of ours would keep
                # it from binding when it restarts.
                old = self.listeners.pop(key, None)
                if old is not None:
                    old.close()
                continue
            if key in self.listeners:
                self.listeners[key].route = route
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(key)
                sock.listen(256)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    log.info("%s %s:%s is served by a host listener on that port", route.service, *key)
                else:
                    log.warning("cannot listen on %s:%s for %s: %s", *key, route.service, exc)
                continue
            self.listeners[key] = _Listener(route, sock)
        for ip in self.addresses - {r.cluster_ip for r in routes}:
            self._del_address(ip)

    def _host_served(self, route: Route) -> bool:
        return bool(route.backends) and all(ip in self.host_ips and port == route.port for ip, port in route.backends)

    def _add_address(self, ip: str) -> None:
        proc = subprocess.run(["ip", "addr", "add", f"{ip}/32", "dev", self.device], capture_output=True, text=True)
        if proc.returncode != 0 and "File exists" not in proc.stderr:
            log.warning("cannot add %s to %s: %s", ip, self.device, proc.stderr.strip())
        self.addresses.add(ip)

    def _del_address(self, ip: str) -> None:
        subprocess.run(["ip", "addr", "del", f"{ip}/32", "dev", self.device], capture_output=True)
        self.addresses.discard(ip)

    def close(self) -> None:
        """Stop listening and remove every address this proxy added."""
        self.update([])
