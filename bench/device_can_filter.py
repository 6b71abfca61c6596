"""CAN receive-filter pushdown: how many frames the CAN driver host lets into its stream, and
what the kernel and the host spend, with the grants' ``recv_ids`` pushed down as the host's
filter (``rx_filter = true``, the default) and without (``rx_filter = false``), same traffic.

A generator process sends every standard id 0x000-0x7FF in turn, at a steady rate, onto a
hil.simbus bus; the kernel's CAN device (python-can ``simbus`` interface in its driver host)
streams what passes to two subscribed sandboxed agents, ``nav`` (``recv_ids = 0x180-0x18F``)
and ``diag`` (``0x700-0x7FF``): 272 of 2048 ids, 13 %. Each setting runs in its own kernel,
off first, then on (the baseline and the measured run are the same bench invocation).

simbus has no filter in the OS, so with the filter on the host still pulls every frame off the
bus and drops the unwanted ones itself (``frames_filtered``) before they are encoded and sent to
the kernel; on ``socketcan`` they would never reach the process (CAN_RAW_FILTER), which only a
guest with vcan shows (tests/guest/test_socketcan.py).

Run as ``generate CHANNEL DIR N RATE`` it is the generator.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import REPO, CpuMeter, Report, agent_script, bench_kernel, main, poll_for

FRAMES = 2048 * 32  # every standard id 32 times
RATE = 15000.0  # frames/s (a 1 Mbit/s bus carries about 8,000): inside what an unfiltered host sustains
GRANTS = {"nav": ["0x180-0x18F"], "diag": ["0x700-0x7FF"]}


def _generate(channel: str, directory: str, n: int, rate: float) -> None:
    import can

    from hil.simbus import SimBus

    bus = SimBus(channel=channel, simbus_dir=directory)
    frames = [can.Message(arbitration_id=i, data=i.to_bytes(2, "big") * 4, is_extended_id=False) for i in range(0x800)]
    start = time.perf_counter()
    for i in range(n):
        ahead = start + i / rate - time.perf_counter()
        if ahead > 0.002:  # sleep in slices rather than spin: the measured processes need the CPUs
            time.sleep(ahead)
        bus.send(frames[i % 0x800], timeout=5)
    print(json.dumps({"sent": n, "seconds": time.perf_counter() - start}), flush=True)
    bus.shutdown()


def _phase(channel: str, directory: str, rx_filter: bool) -> dict[str, Any]:
    config = (
        f'[devices.bus]\ndriver = "can"\ninterface = "simbus"\nchannel = "{channel}"\n'
        f'rx_filter = {"true" if rx_filter else "false"}\noptions = {{ simbus_dir = "{directory}" }}\nqueue = 200000\n'
    )
    with bench_kernel(config) as kernel, kernel.client(timeout=30) as client:
        bus = client.device("bus")
        poll_for(lambda: bus.info()["state"] == "ready", timeout=30, message="the bus")
        for name, ids in GRANTS.items():
            client.spawn(name, agent_script("can_count.py"), devices={"bus": {"ops": ["recv"], "recv_ids": ids}})
        for name in GRANTS:
            poll_for(lambda n=name: b"READY" in client.logs(n)["data"], timeout=30, message=f"{name} ready")
        host_pid = bus.info()["host_pid"]
        before = bus.call("status")
        kernel_cpu, host_cpu = CpuMeter(kernel.pid), CpuMeter(host_pid)
        with kernel_cpu, host_cpu:
            tx = subprocess.Popen(
                [sys.executable, __file__, "generate", channel, directory, str(FRAMES), str(RATE)],
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=str(REPO),
            )  # fmt: skip
            tx_out, _ = tx.communicate(timeout=120)
            sent = json.loads(tx_out.strip().splitlines()[-1])

            def read_by_host(s: dict[str, Any]) -> int:
                return int(s["items_in"] + s["frames_filtered"] - before["items_in"] - before["frames_filtered"])

            # every frame read off the bus (kept or filtered); an overrun would lose some on the way
            with contextlib.suppress(TimeoutError):
                poll_for(lambda: read_by_host(bus.call("status")) >= FRAMES, timeout=15, message="the host to read every frame")
        during = bus.call("status")  # the agents still listen: their filter is in place
        agents = {}
        for name in GRANTS:
            poll_for(lambda n=name: client.logs(n, offset=0, max_bytes=1)["state"] in ("exited", "failed"), timeout=60, message=f"{name} done")
            line = [x for x in client.logs(name, offset=0, max_bytes=1 << 20)["data"].decode().splitlines() if x.startswith("{")][-1]
            agents[name] = json.loads(line)
        after = bus.call("status")
        view = bus.info()
    return {
        "rx_filter": rx_filter,
        "generator_fps": round(FRAMES / sent["seconds"]),
        "lost_before_host": FRAMES - read_by_host(during),
        "host_stream_frames": after["items_in"] - before["items_in"],
        "host_filtered_frames": after["frames_filtered"] - before["frames_filtered"],
        "host_filter": {"pairs": during["rx_filters"], "in": during["rx_filter_in"]},
        "kernel_items_in": view["counters"]["items_in"],
        "delivered": sum(a["count"] for a in agents.values()),
        "dropped": sum(a["dropped"] for a in agents.values()),
        "agents": agents,
        "kernel_cpu_s": round(kernel_cpu.total, 3),
        "host_cpu_s": round(host_cpu.total, 3),
    }


def run(report: Report, say: Callable[[str], None]) -> None:
    from hil.simbus import SimBusHub

    directory = tempfile.mkdtemp(prefix="clvrxf")
    channel = "rxfilter"
    hub = SimBusHub(channel, simbus_dir=directory).start()
    try:
        say(f"device_can_filter: {FRAMES} frames over every standard id at {RATE:.0f}/s, rx_filter off then on")
        off = _phase(channel, directory, rx_filter=False)
        say(f"  off: {off}")
        on = _phase(channel, directory, rx_filter=True)
        say(f"  on:  {on}")
    finally:
        hub.stop()
        for p in Path(directory).glob("*"):
            p.unlink(missing_ok=True)
        Path(directory).rmdir()
    base = "rx_filter off"
    report.add("frames into the host's stream", on["host_stream_frames"], "frames", baseline=off["host_stream_frames"], baseline_name=base,
               note="frames the driver passed to the host, which encodes them and sends them to the kernel")  # fmt: skip
    report.add("frames the kernel received", on["kernel_items_in"], "frames", baseline=off["kernel_items_in"], baseline_name=base)
    report.add("frames filtered in the host", on["host_filtered_frames"], "frames", baseline=off["host_filtered_frames"], baseline_name=base,
               note="simbus has no OS filter: on socketcan these never reach the host process")  # fmt: skip
    report.add("frames delivered to the agents", on["delivered"], "frames", baseline=off["delivered"], baseline_name=base, target="= baseline")
    report.add("kernel CPU during the traffic", on["kernel_cpu_s"], "s", baseline=off["kernel_cpu_s"], baseline_name=base)
    report.add("driver host CPU during the traffic", on["host_cpu_s"], "s", baseline=off["host_cpu_s"], baseline_name=base)
    report.details.update(off=off, on=on)
    same = all(on["agents"][n] == off["agents"][n] for n in GRANTS)
    report.notes.append(f"each agent got the same frames with and without the filter (count, id sum, drops): {same}")
    report.notes.append(f"the host's filter: {on['host_filter']['pairs']} (id, mask) pairs, applied in the {on['host_filter']['in']}")
    report.notes.append(f"frames lost before the host (bus overrun): off {off['lost_before_host']}, on {on['lost_before_host']}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "generate":
        _generate(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        raise SystemExit(main("device_can_filter", run))
