"""Subscribes to events, emits a custom one, tries to forge a kernel event, reports, then waits."""
import json
import signal
import time

from clove_sdk import CloveClient

with CloveClient(timeout=10) as c:
    out = {"subscribe": c.subscribe(["AGENT_SPAWNED", "AGENT_EXITED", "CUSTOM"])}
    out["forge"] = c.emit_event("AGENT_EXITED", {"agent_id": 1})
    out["bad_name"] = c.emit_event("has spaces", None)
    out["emit"] = c.emit_event("sensor.reading", {"value": 42})
    print("READY", flush=True)
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(e["type"] == "AGENT_EXITED" for e in seen):
        seen.extend(c.poll_events(max_events=50, timeout=5)["events"])
    out["seen"] = seen
print("REPORT " + json.dumps(out), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
