"""User-space TCP proxy for ClusterIP Services (there is no kube-proxy and no iptables here).

Each ClusterIP is added to the host's ``lo`` as a /32, so both the host and pods (whose default
route is the node bridge) reach it; a listener on ClusterIP:port forwards each connection to the
next ready backend, round-robin, trying the others when a connect fails.
"""

from __future__ import annotations

import asyncio
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


class _Listener:
    def __init__(self, route: Route) -> None:
        self.route = route
        self.server: asyncio.base_events.Server | None = None
        self.counter = itertools.count()

    def backends(self) -> list[tuple[str, int]]:
        """Backends in round-robin order starting at the next one."""
        b = list(self.route.backends)
        if not b:
            return []
        start = next(self.counter) % len(b)
        return b[start:] + b[:start]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for host, port in self.backends():
            try:
                up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                continue
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
            return
        writer.close()  # no ready backend: refuse, like a Service without endpoints


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            if dst.can_write_eof():
                dst.write_eof()
            else:
                dst.close()
        except (OSError, RuntimeError):
            dst.close()


class ServiceProxy:
    """Owns the listeners and the /32 addresses; :meth:`update` is called with the full route list."""

    def __init__(self, device: str = "lo", host_ips: tuple[str, ...] = ()) -> None:
        self.device = device
        self.host_ips = set(host_ips) | {"127.0.0.1"}
        self.loop = asyncio.new_event_loop()
        self.listeners: dict[tuple[str, int], _Listener] = {}
        self.addresses: set[str] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, name="service-proxy", daemon=True)
        self.thread.start()

    def update(self, routes: Iterable[Route]) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._apply(list(routes)), self.loop)
        fut.result(timeout=30)

    async def _apply(self, routes: list[Route]) -> None:
        wanted = {(r.cluster_ip, r.port): r for r in routes}
        for key in list(self.listeners.keys() - wanted.keys()):
            listener = self.listeners.pop(key)
            if listener.server is not None:
                listener.server.close()
        for ip in {r.cluster_ip for r in routes} - self.addresses:
            self._add_address(ip)
        for key, route in wanted.items():
            if self._host_served(route):
                # The backend is a host process on the same port (e.g. S3 behind manual Endpoints): its
                # 0.0.0.0 listener answers on the ClusterIP already, and a listener of ours would keep
                # it from binding when it restarts.
                old = self.listeners.pop(key, None)
                if old is not None and old.server is not None:
                    old.server.close()
                continue
            if key in self.listeners:
                self.listeners[key].route = route
                continue
            listener = _Listener(route)
            self.listeners[key] = listener
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(key)
                listener.server = await asyncio.start_server(listener.handle, sock=sock, backlog=256)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    # A host process listens on 0.0.0.0:<port> (e.g. MinIO behind manual Endpoints):
                    # it already answers on the ClusterIP, which is a local address now.
                    log.info("%s %s:%s served by a host listener on that port", route.service, *key)
                else:
                    log.warning("cannot listen on %s:%s for %s: %s", *key, route.service, exc)
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
        try:
            self.update([])
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
