"""The egress proxy's cost: connection set-up and throughput through an agent's ``egress.sock``
(HTTP CONNECT, the path every HTTPS request of an agent takes) against a direct TCP connection to
the same upstream, in the same run.

* ``connect``: open, (CONNECT and its 200), one 5-byte request and its answer, close: what a
  client pays per new connection. Direct and proxied runs are interleaved in blocks.
* ``download``: 64 MiB from the upstream in one connection, MB/s.
* the kernel's CPU per proxied connection (receiving and journaling its record) against its CPU
  per NOOP syscall, and the proxy's CPU per connection;
* ``shaped``: the same download with the agent's ``bytes_per_second`` at 20 MB/s, to show the
  shaping holds (the ratio is against that limit).

The upstream is a separate process on ``127.0.0.1`` (``egress_private = ["127.0.0.0/8"]``, so the
proxy admits loopback for this bench); the proxy's limits are opened wide except where shaped.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable

from common import CpuMeter, Report, agent_script, bench_kernel, main, poll_for, stats_dict, summarize

ROUNDS, BLOCK = 8, 50
CPU_N = 300
DOWNLOAD = 64 << 20
SHAPED_RATE = 20 << 20
SHAPED_BYTES = 40 << 20

_UPSTREAM = r"""
import asyncio, sys

async def serve(reader, writer):
    try:
        while line := await reader.readline():
            if line.startswith(b"bytes "):
                left = int(line.split()[1])
                chunk = b"x" * (1 << 20)
                while left > 0:
                    writer.write(chunk[:left]); left -= len(chunk)
                    await writer.drain()
                break
            writer.write(b"pong\n")
            await writer.drain()
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def _config(port: int, rate: str) -> str:
    return f"""
[egress]
connections = 64
connect_rate = 100000
connect_burst = 100000
bytes_per_second = "{rate}"
bytes_burst = "1M"
[agents.bench]
script = "{agent_script("hello_sleep.py")}"
network = true
egress = ["127.0.0.1:{port}"]
egress_private = ["127.0.0.0/8"]
"""


def _direct(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port))


def _proxied(path: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"the proxy closed: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"the proxy refused: {head!r}")
    return sock


def _ping(open_: Callable[[], socket.socket]) -> int:
    started = time.perf_counter_ns()
    with open_() as sock:
        sock.sendall(b"ping\n")
        if sock.recv(16) != b"pong\n":
            raise RuntimeError("bad answer")
    return time.perf_counter_ns() - started


def _download(open_: Callable[[], socket.socket], size: int) -> float:
    """MB/s for ``size`` bytes in one connection."""
    started = time.perf_counter()
    got = 0
    with open_() as sock:
        sock.sendall(f"bytes {size}\n".encode())
        while got < size:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    if got != size:
        raise RuntimeError(f"got {got} of {size} bytes")
    return size / (time.perf_counter() - started) / 1e6


def _proxy_pid(kernel: object) -> int:
    with kernel.client() as client:  # type: ignore[attr-defined]
        entries = client.get_audit_log(category="NETWORK", limit=1000)["entries"]
    return int([e for e in entries if e["event_type"] == "egress.proxy_started"][-1]["details"]["pid"])


def _egress_socket(kernel: object) -> str:
    agents = kernel.state_dir / "agents"  # type: ignore[attr-defined]
    return str(poll_for(lambda: next(iter(agents.glob("*/ipc/egress.sock")), None), 15))


def run(report: Report, say: Callable[[str], None]) -> None:
    upstream = subprocess.Popen([sys.executable, "-c", _UPSTREAM], stdout=subprocess.PIPE, text=True)
    try:
        assert upstream.stdout is not None
        port = int(upstream.stdout.readline())
        with bench_kernel(_config(port, "4G")) as kernel:
            path = _egress_socket(kernel)
            poll_for(lambda: _safe_ping(path, port), 15)
            say(f"egress: {ROUNDS} rounds x {BLOCK} connections per path, interleaved")
            direct: list[int] = []
            proxied: list[int] = []
            for _ in range(ROUNDS):
                direct.extend(_ping(lambda: _direct(port)) for _ in range(BLOCK))
                proxied.extend(_ping(lambda: _proxied(path, port)) for _ in range(BLOCK))
            d, p = summarize(direct), summarize(proxied)
            report.add("connect+1 round trip p50 (proxy)", p.p50, "µs", baseline=d.p50, baseline_name="direct TCP p50")
            report.add("connect+1 round trip p99 (proxy)", p.p99, "µs", baseline=d.p99, baseline_name="direct TCP p99")
            report.details["connect_us"] = {"direct": stats_dict(d), "proxy": stats_dict(p)}
            say("egress: the kernel's CPU per proxied connection (its journal record) vs per NOOP syscall")
            proxy_pid = _proxy_pid(kernel)
            kernel_cpu, proxy_cpu = CpuMeter(kernel.pid), CpuMeter(proxy_pid)
            with kernel_cpu, proxy_cpu:
                for _ in range(CPU_N):
                    _ping(lambda: _proxied(path, port))
            with kernel.client() as client, CpuMeter(kernel.pid) as noop_cpu:
                for _ in range(CPU_N):
                    client.call("noop", msg="x")
            report.add("kernel CPU per proxied connection", kernel_cpu.total / CPU_N * 1e6, "µs", baseline=noop_cpu.total / CPU_N * 1e6, baseline_name="per NOOP syscall")
            report.add("proxy CPU per connection", proxy_cpu.total / CPU_N * 1e6, "µs")
            say("egress: 64 MiB downloads, direct and proxied, twice each")
            direct_mb = max(_download(lambda: _direct(port), DOWNLOAD) for _ in range(2))
            proxy_mb = max(_download(lambda: _proxied(path, port), DOWNLOAD) for _ in range(2))
            report.add("download 64 MiB (proxy)", proxy_mb, "MB/s", baseline=direct_mb, baseline_name="direct TCP")
        with bench_kernel(_config(port, f"{SHAPED_RATE}")) as kernel:
            path = _egress_socket(kernel)
            poll_for(lambda: _safe_ping(path, port), 15)
            say(f"egress: {SHAPED_BYTES >> 20} MiB at bytes_per_second = {SHAPED_RATE >> 20} MiB/s")
            shaped = _download(lambda: _proxied(path, port), SHAPED_BYTES)
            report.add("download, shaped (proxy)", shaped, "MB/s", baseline=SHAPED_RATE / 1e6, baseline_name="bytes_per_second", target="ratio ≤ 1.05")
    finally:
        upstream.kill()
        upstream.wait()


def _safe_ping(path: str, port: int) -> bool:
    try:
        _ping(lambda: _proxied(path, port))
        return True
    except (OSError, RuntimeError):
        return False


if __name__ == "__main__":
    sys.exit(main("egress", run))
