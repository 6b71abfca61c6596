"""Times N mediated CAN sends from inside a sandboxed agent for bench/device_can.py:
``device.call send`` from just before the call until its acknowledgement is back (agent →
kernel → driver host → bus → back). Prints one JSON line: {"rtt": [ns, ...]}."""
import json
import sys
import time

from clove_sdk import CloveClient

n, warmup = int(sys.argv[1]), int(sys.argv[2])
with CloveClient(timeout=30) as c:
    bus = c.device("bus")
    samples = []
    for i in range(n + warmup):
        t0 = time.perf_counter_ns()
        bus.send(id=0x101, data=b"\x00\x10\x00\x00")
        if i >= warmup:
            samples.append(time.perf_counter_ns() - t0)
print(json.dumps({"rtt": samples}), flush=True)
