"""Times N serial echo round trips through Clove for bench/device_serial.py: write a line to
"port", read it back (the far end echoes). Prints one JSON line: {"rtt": [ns, ...]}."""
import json
import sys
import time

from clove_sdk import CloveClient

n, warmup = int(sys.argv[1]), int(sys.argv[2])
line = b"$PING,0123456789ABCDEF*00\n"
with CloveClient(timeout=30) as c:
    port = c.device("port")
    port.subscribe()
    samples = []
    for i in range(n + warmup):
        t0 = time.perf_counter_ns()
        port.write(data=line)
        got = port.readline(timeout=5)
        if got != line:
            raise SystemExit(f"echo mismatch: {got!r}")
        if i >= warmup:
            samples.append(time.perf_counter_ns() - t0)
print(json.dumps({"rtt": samples}), flush=True)
