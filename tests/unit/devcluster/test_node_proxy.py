"""The user-space Service proxy forwards round-robin to ready backends (on loopback, no cluster)."""

import socket
import socketserver
import threading

from kiln_devcluster.node.proxy import ServiceProxy
from kiln_devcluster.node.services import Route


def backend(tag: bytes):
    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            data = self.request.recv(100)
            self.request.sendall(tag + b":" + data)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask(ip: str, port: int) -> bytes:
    with socket.create_connection((ip, port), timeout=5) as c:
        c.sendall(b"hi")
        c.shutdown(socket.SHUT_WR)
        return c.recv(100)


def test_round_robin_skips_dead_backends_and_updates():
    a, b = backend(b"a"), backend(b"b")
    dead = free_port()
    port = free_port()
    # 127.0.0.0/8 is local already: the test needs no privileges for the /32.
    proxy = ServiceProxy(device="lo")
    try:
        backends = (("127.0.0.1", a.server_address[1]), ("127.0.0.1", b.server_address[1]), ("127.0.0.1", dead))
        proxy.update([Route("127.0.0.77", port, tuple(sorted(backends)), "t/svc")])
        answers = [ask("127.0.0.77", port) for _ in range(6)]
        assert set(answers) == {b"a:hi", b"b:hi"}, (answers, backends, port)
        proxy.update([Route("127.0.0.77", port, (("127.0.0.1", b.server_address[1]),), "t/svc")])
        assert {ask("127.0.0.77", port) for _ in range(3)} == {b"b:hi"}
    finally:
        proxy.close()
        a.shutdown()
        b.shutdown()


def test_host_served_route_gets_no_listener():
    proxy = ServiceProxy(device="lo", host_ips=("10.88.0.1",))
    try:
        assert proxy._host_served(Route("10.96.0.9", 9000, (("10.88.0.1", 9000),), "kiln-system/minio"))
        assert not proxy._host_served(Route("10.96.0.9", 80, (("10.88.0.1", 9000),), "x/y"))
        assert not proxy._host_served(Route("10.96.0.9", 9000, (), "x/y"))
    finally:
        proxy.close()
