"""A blocking receive (timeout from its first argument): reports what arrived and how long it
took. Prints READY just before it starts waiting."""
import json
import sys
import time

from clove_sdk import CloveClient

with CloveClient(timeout=10) as c:
    print("READY", flush=True)
    t = time.monotonic()
    r = c.recv_messages(timeout=float(sys.argv[1]))
    r["elapsed"] = time.monotonic() - t
print("REPORT " + json.dumps(r), flush=True)
