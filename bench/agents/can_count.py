"""Counts the CAN frames delivered to this sandboxed agent for bench/device_can_filter.py.

Subscribes to "bus", prints READY, then receives in batches until no frame has come for 3 s
after the first one. One JSON line: {"count", "id_sum", "dropped"} (``id_sum``: the sum of the
frames' ids, so two runs can be compared beyond their counts)."""
import json

from clove_sdk import CloveClient

with CloveClient(timeout=30) as c:
    c.device("bus").subscribe(queue=200_000)
    print("READY", flush=True)
    count, id_sum, dropped, started = 0, 0, 0, False
    while True:
        reply = c.call("device.recv", device="bus", max_items=5000, timeout=3 if started else 60)
        dropped = reply["dropped"]
        if reply["count"] == 0:
            if started:
                break
            continue
        started = True
        count += reply["count"]
        id_sum += sum(f["id"] for f in reply["items"])
print(json.dumps({"count": count, "id_sum": id_sum, "dropped": dropped}), flush=True)
