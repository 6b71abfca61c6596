"""Serial echo round trip through Clove vs pyserial directly on the same pseudo-terminal.

The far end of a pty pair echoes every byte (a thread in this process). Baseline: pyserial
opens the pty's slave here and writes a 26-byte line and reads it back. Through Clove: a
sandboxed agent does the same with ``device("port").write`` and ``readline`` (agent → kernel →
serial driver host → pty → echo → host → kernel → agent). Same run, same pty.
"""

from __future__ import annotations

import json
import os
import select
import threading
import time
import tty
from collections.abc import Callable
from typing import Any

from common import Report, agent_script, bench_kernel, main, poll_for, stats_dict, summarize

N = 2000
WARMUP = 200
LINE = b"$PING,0123456789ABCDEF*00\n"


class Echo:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.name = os.ttyname(self.slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    os.write(self.master, os.read(self.master, 4096))
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self.master)
        os.close(self.slave)


def _direct(port_name: str) -> list[int]:
    import serial

    samples = []
    with serial.Serial(port_name, 115200, timeout=5) as port:
        for i in range(N + WARMUP):
            t0 = time.perf_counter_ns()
            port.write(LINE)
            if port.readline() != LINE:
                raise RuntimeError("echo mismatch")
            if i >= WARMUP:
                samples.append(time.perf_counter_ns() - t0)
    return samples


def _through_clove(client: Any) -> list[int]:
    client.spawn("serial-rtt", agent_script("serial_rtt.py"), args=[str(N), str(WARMUP)], devices={"port": {"ops": ["write", "read"]}})
    poll_for(lambda: client.logs("serial-rtt", offset=0, max_bytes=1)["state"] in ("exited", "failed"), timeout=150, interval=0.1, message="the agent")
    for line in client.logs("serial-rtt", offset=0, max_bytes=8 << 20)["data"].decode(errors="replace").splitlines():
        if line.startswith("{"):
            return list(json.loads(line)["rtt"])
    raise RuntimeError("no samples in the agent's log")


def run(report: Report, say: Callable[[str], None]) -> None:
    echo = Echo()
    try:
        say(f"device_serial: {N} echo round trips with pyserial directly, then through Clove, then directly again")
        direct = _direct(echo.name)[: N // 2]
        with bench_kernel(f'[devices.port]\ndriver = "serial"\nport = "{echo.name}"\nbaudrate = 115200\nexclusive = false\n') as kernel, kernel.client() as client:
            poll_for(lambda: client.device("port").info()["state"] == "ready", timeout=20, message="the port")
            mediated = _through_clove(client)
        direct += _direct(echo.name)[: N // 2]
    finally:
        echo.close()
    d, m = summarize(direct), summarize(mediated)
    report.add("pyserial direct echo p50", d.p50, "µs")
    report.add("pyserial direct echo p99", d.p99, "µs")
    report.add("through Clove echo p50", m.p50, "µs", baseline=d.p50, baseline_name="direct p50", target="≤2.5x")
    report.add("through Clove echo p99", m.p99, "µs", baseline=d.p99, baseline_name="direct p99")
    report.details["stats_us"] = {"direct": stats_dict(d), "clove": stats_dict(m)}
    for label, s in (("direct", d), ("clove", m)):
        say(f"  {label:7s} {s.fmt()}")


if __name__ == "__main__":
    raise SystemExit(main("device_serial", run))
