"""Asks the loopback device who it thinks is calling, then collects items for 2 s; one REPORT."""
import json

from clove_sdk import CloveClient

with CloveClient() as c:
    loop = c.device("loop")
    loop.subscribe()
    print("READY", flush=True)
    report = {"whoami": loop.whoami()}
    items = []
    while not any(i["data"] == "end" for i in items):
        got = loop.recv(max_items=100, timeout=10)
        if not got:
            break
        items.extend(got)
    report["tags"] = [i["tag"] for i in items]
print("REPORT " + json.dumps(report), flush=True)
