"""Tries the recording controls (operators only) and the kernel's clock and seed (everyone);
prints what it got as a REPORT line."""

import json

from clove_sdk import CloveClient
from clove_sdk.errors import CloveError

report: dict = {}
with CloveClient() as c:
    for call in ("record.start", "record.status", "replay.status"):
        try:
            c.call(call)
            report[call] = "allowed"
        except CloveError as err:
            report[call] = err.code
    report["now"] = isinstance(c.now(), float)
    report["seed"] = 0 <= c.random_seed() < 2**64
print("REPORT " + json.dumps(report), flush=True)
