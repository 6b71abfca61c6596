"""Looks in its mailbox at start: with mail, reports it and idles; without, fails (exit 1) so
its restart policy brings it back."""
import json
import signal
import sys
import time

from clove_sdk import CloveClient

with CloveClient(timeout=10) as c:
    got = c.recv_messages()["messages"]
    if not got:
        time.sleep(0.3)
        sys.exit(1)
    print("REPORT " + json.dumps(got), flush=True)
    while True:
        signal.pause()  # idle until the kernel stops it
