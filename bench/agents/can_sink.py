"""Counts CAN frames delivered to this sandboxed agent for bench/device_fanout.py.

Subscribes to "bus" with a large queue, prints READY, then receives in batches until no frame
has come for 2 s after the first one. One JSON line: {"count", "dropped", "first", "last"}
(CLOCK_REALTIME seconds of the first and last batch)."""
import json
import time

from clove_sdk import CloveClient

with CloveClient(timeout=30) as c:
    bus = c.device("bus")
    bus.subscribe(queue=200_000)
    print("READY", flush=True)
    count, dropped, first, last = 0, 0, None, None
    while True:
        reply = c.call("device.recv", device="bus", max_items=5000, timeout=2 if first else 60)
        n = reply["count"]
        dropped = reply["dropped"]
        if n == 0:
            if first is not None:
                break
            continue
        now = time.time()
        first = first or now
        last = now
        count += n
print(json.dumps({"count": count, "dropped": dropped, "first": first, "last": last}), flush=True)
