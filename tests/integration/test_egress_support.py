"""Support for the egress tests (no tests here): HTTP and HTTPS upstreams inside a network namespace of
their own, reached from the host over a veth pair in 198.51.100.0/24 (a documentation range),
and a small client that speaks to an agent's ``egress.sock`` directly.

Every name (namespace, links) carries this process's pid and a random tag, and is removed by
name at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clove.testing.kernel import poll_for

HTTP_PORT, HTTPS_PORT = 8080, 8443

# Runs inside the namespace: /hello, /bytes/N, and anything else echoes the request line.
_SERVER = r"""
import ssl, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path.startswith("/bytes/"):
            body = b"x" * int(self.path.split("/")[2])
        else:
            body = f"hello from upstream: {self.command} {self.path} host={self.headers.get('Host')} connection={self.headers.get('Connection')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

address, cert, key, http_port, https_port = sys.argv[1:6]
plain = ThreadingHTTPServer((address, int(http_port)), H)
secure = ThreadingHTTPServer((address, int(https_port)), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
secure.socket = ctx.wrap_socket(secure.socket, server_side=True)
for s in (plain, secure):
    s.daemon_threads = True
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


@dataclass
class Upstream:
    """``address``: the servers' address (inside the namespace); ``cafile``: trust this for
    ``secure.test``."""

    netns: str
    address: str
    cafile: str


@contextlib.contextmanager
def upstream_namespace(workdir: Path) -> Iterator[Upstream]:
    tag = f"{os.getpid() % 100000}{random.randrange(100):02d}"
    netns, host_link, ns_link = f"clveg{tag}", f"cveh{tag}", f"cven{tag}"
    block = random.randrange(16, 62) * 4  # a /30 of our own inside 198.51.100.0/24
    host_ip, ns_ip = f"198.51.100.{block + 1}", f"198.51.100.{block + 2}"
    cert, key = workdir / "upstream.crt", workdir / "upstream.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
         "-subj", "/CN=secure.test", "-addext", "subjectAltName=DNS:secure.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server: subprocess.Popen[str] | None = None
    try:
        _ip("netns", "add", netns)
        _ip("link", "add", host_link, "type", "veth", "peer", "name", ns_link)
        _ip("link", "set", ns_link, "netns", netns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_link)
        _ip("link", "set", host_link, "up")
        _ip("-n", netns, "addr", "add", f"{ns_ip}/30", "dev", ns_link)
        _ip("-n", netns, "link", "set", ns_link, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", _SERVER, ns_ip, str(cert), str(key), str(HTTP_PORT), str(HTTPS_PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        poll_for(lambda: _reachable(ns_ip, HTTP_PORT), 10, message="the upstream over the veth pair")
        yield Upstream(netns, ns_ip, str(cert))
    finally:
        if server is not None:
            server.kill()
            server.wait(5)
        _ip("link", "del", host_link, check=False)
        _ip("netns", "del", netns, check=False)


def _reachable(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


# ---- a client on the agent's egress.sock ----------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def read_answer(sock: socket.socket | ssl.SSLSocket, *, head_only: bool = False) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines[0] else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if not head_only:
        length = int(headers.get("content-length", -1))
        while length < 0 or len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return Answer(status, headers, body)


def connect(path: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    return sock


def http_get(path: str, url: str, extra: str = "") -> Answer:
    """A plain-HTTP request in absolute form through the proxy."""
    host = url.split("/")[2]
    with connect(path) as sock:
        sock.sendall(f"GET {url} HTTP/1.1\r\nHost: {host}\r\nProxy-Connection: keep-alive\r\n{extra}\r\n".encode())
        return read_answer(sock)


def tunnel(path: str, target: str) -> tuple[socket.socket, Answer]:
    """CONNECT ``target``; the socket (open) and the proxy's answer."""
    sock = connect(path)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    return sock, read_answer(sock, head_only=True)


def https_get(path: str, host: str, port: int, cafile: str, url_path: str = "/hello") -> Answer:
    """HTTPS end to end through a CONNECT tunnel: the proxy sees only TLS."""
    sock, answer = tunnel(path, f"{host}:{port}")
    if answer.status != 200:
        sock.close()
        return answer
    ctx = ssl.create_default_context(cafile=cafile)
    with ctx.wrap_socket(sock, server_hostname=host) as tls:
        tls.sendall(f"GET {url_path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return read_answer(tls)


def socks_connect(path: str, host: str, port: int) -> tuple[socket.socket, int]:
    """SOCKS5 CONNECT by name (``socks5h``); the socket (open) and the reply code (0: granted)."""
    sock = connect(path)
    sock.sendall(b"\x05\x01\x00")
    if recv_exactly(sock, 2) != b"\x05\x00":
        raise RuntimeError("no SOCKS5 method")
    name = host.encode()
    sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
    answer = recv_exactly(sock, 10)
    return sock, answer[1] if len(answer) > 1 else -1


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes, or fewer if the peer closes first."""
    data = b""
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return data
