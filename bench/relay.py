"""The loopback relay (what a sandbox's init runs for an agent's ``127.0.0.1:3128`` and ``:8199``,
:mod:`clove.sandbox.relayloop`) against a direct connection to the same Unix server.

Three processes: a server (a thread per connection) listening on a Unix socket and on loopback
TCP; the relay, running the same ``RelayLoop`` a sandbox's init runs, from a TCP listener to the
server's Unix socket; this process as the client. The relay runs on the host's loopback here:
inside an agent's network namespace the kernel's path is the same.

Figures, each path measured in interleaved blocks:

* connection set-up: ``connect``, one byte there and back, ``close`` (p50/p99), through the relay
  and directly over Unix (the baseline) and over loopback TCP (what any TCP client pays);
* round trip of a 64-byte message on an open connection (p50/p99);
* one-way throughput: 64 MiB sent, the server counts it and answers (MiB/s, median of runs).

Then the same from inside a real sandbox (``bench/agents/relay_client.py``, an agent with
``network = true`` under a real kernel: its own network namespace, Landlock, seccomp, its
sandbox's init relaying): set-up and throughput through ``127.0.0.1:3128``, against the agent
connecting directly to the same server's Unix socket in its channel dir. The bench's server
takes the place of the kernel's egress proxy on the agent's ``egress.sock``.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from common import Report, agent_script, bench_kernel, main, poll_for, stats_dict, summarize

from clove.sandbox.relayloop import RelayLoop, dispatch
from clove.sandbox.relays import Relay

N_SETUP = 1500
N_RTT = 4000
BLOCK = 250
THROUGHPUT_BYTES = 64 << 20
THROUGHPUT_RUNS = 5
CHUNK = 256 << 10
AGENT_SETUPS = 600
AGENT_BYTES = 32 << 20
AGENT_RUNS = 3


# ---- the server and the relay, each in a forked process --------------------------------------


def _serve_one(conn: socket.socket) -> None:
    with conn:
        mode = conn.recv(1)
        if mode == b"E":  # echo: the mode byte, then everything until EOF
            conn.sendall(b"E")
            while data := conn.recv(1 << 16):
                conn.sendall(data)
        elif mode == b"S":  # sink: count until EOF, answer the count
            total = 0
            while data := conn.recv(1 << 20):
                total += len(data)
            conn.sendall(total.to_bytes(8, "big"))


def _server(*listeners: socket.socket) -> None:
    def accept_loop(listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()

    for listener in listeners[1:]:
        threading.Thread(target=accept_loop, args=(listener,), daemon=True).start()
    accept_loop(listeners[0])


def _relay(listener: socket.socket, path: str) -> None:
    selector = selectors.DefaultSelector()
    listener.setblocking(False)
    RelayLoop(selector, [Relay(listener.getsockname()[1], path)], [listener])
    while True:
        dispatch(selector)


def _fork(target: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            target()
        finally:
            os._exit(0)
    return pid


# ---- the client --------------------------------------------------------------------------------


Connect = Callable[[], socket.socket]


def _exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise ConnectionError("closed early")
        buf += data
    return buf


def setup_once(connect: Connect) -> int:
    start = time.perf_counter_ns()
    with connect() as sock:
        sock.sendall(b"E")
        _exact(sock, 1)
    return time.perf_counter_ns() - start


def rtts(connect: Connect, n: int) -> list[int]:
    out = []
    message = b"m" * 64
    with connect() as sock:
        sock.sendall(b"E")
        _exact(sock, 1)
        for _ in range(n):
            start = time.perf_counter_ns()
            sock.sendall(message)
            _exact(sock, 64)
            out.append(time.perf_counter_ns() - start)
    return out


def throughput(connect: Connect) -> float:
    """MiB/s for THROUGHPUT_BYTES one way, until the server has counted them all."""
    chunk = b"t" * CHUNK
    start = time.perf_counter()
    with connect() as sock:
        sock.sendall(b"S")
        for _ in range(THROUGHPUT_BYTES // CHUNK):
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        counted = int.from_bytes(_exact(sock, 8), "big")
    elapsed = time.perf_counter() - start
    assert counted == THROUGHPUT_BYTES, counted  # noqa: S101 - a relay that loses bytes is no figure
    return THROUGHPUT_BYTES / (1 << 20) / elapsed


def interleaved(paths: dict[str, Connect], measure: Callable[[Connect, int], list[int]], total: int) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in paths}
    for _ in range(total // BLOCK):
        for name, connect in paths.items():
            samples[name] += measure(connect, BLOCK)
    return samples


def run(report: Report, say: Callable[[str], None]) -> None:
    workdir = tempfile.mkdtemp(prefix="clove-relay-bench-")
    path = os.path.join(workdir, "svc.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(path)
    unix.listen(128)
    tcp = socket.create_server(("127.0.0.1", 0), backlog=128)
    relay_listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    tcp_port, relay_port = tcp.getsockname()[1], relay_listener.getsockname()[1]
    children = [_fork(lambda: _server(unix, tcp)), _fork(lambda: _relay(relay_listener, path))]
    for sock in (unix, tcp, relay_listener):
        sock.close()

    def over_unix() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        return sock

    def over_tcp(port: int) -> Connect:
        def connect() -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

        return connect

    paths: dict[str, Connect] = {"relay": over_tcp(relay_port), "unix": over_unix, "tcp": over_tcp(tcp_port)}
    details: dict[str, Any] = {}
    try:
        say("warm-up")
        for connect in paths.values():
            for _ in range(50):
                setup_once(connect)
        say(f"connection set-up, {N_SETUP} per path")
        setup = interleaved(paths, lambda c, n: [setup_once(c) for _ in range(n)], N_SETUP)
        say(f"round trips, {N_RTT} per path")
        rtt = interleaved(paths, rtts, N_RTT)
        say(f"throughput, {THROUGHPUT_RUNS} x {THROUGHPUT_BYTES >> 20} MiB per path")
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(THROUGHPUT_RUNS):
            for name, connect in paths.items():
                rates[name].append(throughput(connect))
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.unlink(path)
        os.rmdir(workdir)
    s = {name: summarize(v) for name, v in setup.items()}
    r = {name: summarize(v) for name, v in rtt.items()}
    tp = {name: statistics.median(v) for name, v in rates.items()}
    for stat in ("p50", "p99"):
        report.add(f"set-up via relay {stat}", getattr(s["relay"], stat), "µs", baseline=getattr(s["unix"], stat), baseline_name="direct Unix")
        report.add(f"set-up direct TCP {stat}", getattr(s["tcp"], stat), "µs", baseline=getattr(s["unix"], stat), baseline_name="direct Unix")
    for stat in ("p50", "p99"):
        report.add(f"64 B round trip via relay {stat}", getattr(r["relay"], stat), "µs", baseline=getattr(r["unix"], stat), baseline_name="direct Unix")
    report.add("throughput via relay", tp["relay"], "MiB/s", baseline=tp["unix"], baseline_name="direct Unix")
    report.add("throughput direct TCP", tp["tcp"], "MiB/s", baseline=tp["unix"], baseline_name="direct Unix")
    details["setup"] = {name: stats_dict(v) for name, v in s.items()}
    details["rtt"] = {name: stats_dict(v) for name, v in r.items()}
    details["throughput_runs"] = {name: [round(x, 1) for x in v] for name, v in rates.items()}
    report.details.update(details)
    report.notes.append("the relay adds two copies and one hop (client → relay → server): set-up pays one more connect and an accept in the relay's loop")
    say("from inside a sandbox")
    in_sandbox(report, say)


def _unix_listener(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # the kernel's egress proxy bound it first: the bench's server takes its place
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o666)  # the agent's uid connects to bench.sock directly
    sock.listen(128)
    return sock


def in_sandbox(report: Report, say: Callable[[str], None]) -> None:
    with bench_kernel("[sandbox]\nspares_max = 0\nspares_min = 0\n") as kernel, kernel.client(timeout=30) as client:
        args = [str(AGENT_SETUPS), str(AGENT_BYTES), str(AGENT_RUNS)]
        reply = client.call("agent.spawn", name="relay-bench", script=agent_script("relay_client.py"), args=args, network=True)
        channel = kernel.state_dir / "agents" / str(reply["id"]) / "ipc"
        with contextlib.suppress(TimeoutError):  # the kernel's proxy binds egress.sock once it is up
            poll_for(lambda: (channel / "egress.sock").exists(), 10, message="the egress proxy's socket")
        listeners = [_unix_listener(str(channel / "egress.sock")), _unix_listener(str(channel / "bench.sock"))]
        server = _fork(lambda: _server(*listeners))
        for sock in listeners:
            sock.close()
        try:
            (channel / "GO").touch()

            def find() -> dict[str, Any] | None:
                data = client.call("agent.logs", name="relay-bench", offset=0, max_bytes=1 << 20)["data"].decode()
                lines = [line for line in data.splitlines() if line.startswith("REPORT ")]
                return json.loads(lines[0][len("REPORT ") :]) if lines else None

            found = poll_for(find, 150, interval=0.2, message="the agent's figures")
            result: dict[str, Any] = found if found is not None else {}
            client.kill(name="relay-bench")
        finally:
            os.kill(server, signal.SIGKILL)
            os.waitpid(server, 0)
    s = {name: summarize(v) for name, v in result["setup_ns"].items()}
    tp = {name: statistics.median(v) for name, v in result["mib_s"].items()}
    for stat in ("p50", "p99"):
        report.add(f"sandboxed agent: set-up via relay {stat}", getattr(s["relay"], stat), "µs", baseline=getattr(s["unix"], stat), baseline_name="agent direct Unix")
    report.add("sandboxed agent: throughput via relay", tp["relay"], "MiB/s", baseline=tp["unix"], baseline_name="agent direct Unix")
    report.details["sandboxed"] = {"setup": {name: stats_dict(v) for name, v in s.items()}, "mib_s": result["mib_s"]}


if __name__ == "__main__":
    raise SystemExit(main("relay", run))
