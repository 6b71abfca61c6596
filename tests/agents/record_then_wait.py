"""Takes its inputs through the kernel (the clock, a seed, a noop), prints them as a REPORT line
and READY, then waits to be killed from outside: idle with no syscall in flight, or with
$WAIT_IN=recv inside a blocking receive (whose request then never gets its reply)."""

import json
import os
import signal

from clove_sdk import CloveClient

with CloveClient(timeout=120) as c:
    report = {"now": c.now(), "seed": c.random_seed(), "noop": c.noop("before the kill")}
    print("REPORT " + json.dumps(report, sort_keys=True, default=repr), flush=True)
    print("READY", flush=True)
    if os.environ.get("WAIT_IN") == "recv":
        c.recv_messages(timeout=100)
    while True:
        signal.pause()  # idle until killed
