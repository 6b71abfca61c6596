"""bench/relay.py's agent: from inside its sandbox, connection set-up and one-way throughput to
the bench's server through its relay (``127.0.0.1:3128`` → ``egress.sock``) and directly over
the Unix socket ``bench.sock`` in its channel dir, interleaved. Waits for ``GO`` there first.

argv: set-ups per path, throughput bytes per run, runs. Prints ``REPORT {json}``.
"""
import json
import os
import signal
import socket
import sys
import time

n_setup, nbytes, runs = (int(a) for a in sys.argv[1:4])
channel = os.path.dirname(os.environ["CLOVE_AGENT_ENDPOINT"][len("ipc://"):])
deadline = time.monotonic() + 30
while not os.path.exists(os.path.join(channel, "GO")) and time.monotonic() < deadline:
    time.sleep(0.02)


def relay():
    sock = socket.create_connection(("127.0.0.1", 3128))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def unix():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.path.join(channel, "bench.sock"))
    return sock


def exact(sock, n):
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise ConnectionError("closed early")
        buf += data
    return buf


def setup(connect):
    start = time.perf_counter_ns()
    with connect() as sock:
        sock.sendall(b"E")
        exact(sock, 1)
    return time.perf_counter_ns() - start


def throughput(connect):
    chunk = b"t" * (256 << 10)
    start = time.perf_counter()
    with connect() as sock:
        sock.sendall(b"S")
        for _ in range(nbytes // len(chunk)):
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        counted = int.from_bytes(exact(sock, 8), "big")
    if counted != nbytes:
        raise AssertionError(f"counted {counted} of {nbytes}")
    return nbytes / (1 << 20) / (time.perf_counter() - start)


paths = {"relay": relay, "unix": unix}
report = {"setup_ns": {p: [] for p in paths}, "mib_s": {p: [] for p in paths}}
for connect in paths.values():
    for _ in range(20):
        setup(connect)
for _ in range(n_setup // 100):
    for name, connect in paths.items():
        report["setup_ns"][name] += [setup(connect) for _ in range(100)]
for _ in range(runs):
    for name, connect in paths.items():
        report["mib_s"][name].append(throughput(connect))
print("REPORT " + json.dumps(report), flush=True)
while True:
    signal.pause()
