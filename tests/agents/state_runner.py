"""Runs state operations given as JSON in argv[1], prints ``REPORT {json}``; with argv[2] ==
"stay" it then waits to be stopped, otherwise it exits.

Operations (lists): ["store", key, value, scope?, ttl?], ["store_bytes", key, hex, scope?],
["fetch", key, scope?], ["delete", key, scope?], ["keys", prefix?, scope?], ["subscribe"],
["ready"] (prints READY), ["wait_event", key, action, timeout] (polls STATE_CHANGED events
until one for that key and action). Bytes in results are reported as {"hex": ...}.
"""

import json
import signal
import sys
import time

from clove_sdk import CloveClient

ops = json.loads(sys.argv[1])
out = {"results": [], "events": []}
with CloveClient(timeout=10) as c:
    out["me"] = c.hello()
    for op, *args in ops:
        if op == "store":
            result = c.store(*args)
        elif op == "store_bytes":
            result = c.store(args[0], bytes.fromhex(args[1]), *args[2:])
        elif op == "fetch":
            result = c.fetch(*args)
        elif op == "delete":
            result = c.delete_key(*args)
        elif op == "keys":
            result = c.list_keys(*args)
        elif op == "subscribe":
            result = c.subscribe(["STATE_CHANGED"])
        elif op == "ready":
            print("READY", flush=True)
            result = None
        elif op == "wait_event":
            key, action, timeout = args
            deadline = time.monotonic() + timeout
            result = False
            while time.monotonic() < deadline and not result:
                events = c.poll_events(max_events=50, timeout=1)["events"]
                out["events"].extend(events)
                result = any(e["data"]["key"] == key and e["data"]["action"] == action for e in events)
        else:
            raise SystemExit(f"unknown op {op!r}")
        out["results"].append(result)
print("REPORT " + json.dumps(out, default=lambda b: {"hex": b.hex()}), flush=True)
if sys.argv[2:] == ["stay"]:
    while True:
        signal.pause()  # idle until the kernel stops it
