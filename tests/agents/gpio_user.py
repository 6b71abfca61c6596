"""A GPIO agent for the device tests: reads all the lines it may, tries to set the brake,
then waits for the first estop edge. One REPORT line."""

import json

from clove_sdk import CloveClient
from clove_sdk.errors import CloveError

report: dict = {}
with CloveClient() as c:
    estop = c.device("estop")
    estop.subscribe()
    report["get"] = estop.get()
    try:
        estop.set(values={"brake": 1})
        report["set"] = "ok"
    except CloveError as err:
        report["set"] = err.code
    print("READY", flush=True)
    edges = estop.recv(max_items=10, timeout=15)
    report["edges"] = [(e["line"], e["edge"], e["value"]) for e in edges]
print("REPORT " + json.dumps(report), flush=True)
