"""A GPIO agent for the real-chip guest test (tests/guest/test_gpio.py), on device ``panel``
with ``button`` readable and ``lamp`` writable. It reads ``button``, says READY, waits (up to
argv[1] seconds) for a rising edge on it, reads it again, lights ``lamp``, then tries the
lines outside its grant: sets ``relay`` and reads ``door``. One REPORT line."""

import json
import sys
import time

from clove_sdk import CloveClient
from clove_sdk.errors import CloveError

wait = float(sys.argv[1])
report: dict = {}


def attempt(call) -> object:
    try:
        return call()
    except CloveError as err:
        return err.code


with CloveClient() as c:
    panel = c.device("panel")
    panel.subscribe()
    report["before"] = panel.get(lines=["button"])
    print("READY", flush=True)
    edges: list = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not any(
        e["line"] == "button" and e["edge"] == "rising" for e in edges
    ):
        edges += panel.recv(max_items=10, timeout=1)
    report["edges"] = [(e["line"], e["edge"], e["value"]) for e in edges]
    report["after"] = panel.get(lines=["button"])
    report["lamp"] = attempt(lambda: panel.set(values={"lamp": 1}))
    report["relay"] = attempt(lambda: panel.set(values={"relay": 1}))
    report["door"] = attempt(lambda: panel.get(lines=["door"]))
print("REPORT " + json.dumps(report), flush=True)
