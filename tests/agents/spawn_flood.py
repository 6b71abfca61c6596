"""Spawns children as fast as the kernel answers (argv[1] of them, each exiting at once), then
reports how many were started and idles."""
import json
import os
import signal
import sys

from clove_sdk import CloveClient
from clove_sdk.errors import CloveError

child = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exit_code.py")
started = failed = 0
with CloveClient(timeout=30) as c:
    for i in range(int(sys.argv[1])):
        try:
            c.call("agent.spawn", name=f"flood-{i}", script=child, args=["0"])
            started += 1
        except CloveError:
            failed += 1
print("REPORT " + json.dumps({"started": started, "failed": failed}), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
