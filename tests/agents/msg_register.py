"""Registers the name given as its first argument, reports the result, then lives for the
number of seconds given as its second argument (default: forever)."""
import json
import signal
import sys
import time

from clove_sdk import CloveClient

with CloveClient(timeout=10) as c:
    print("REPORT " + json.dumps(c.register_name(sys.argv[1])), flush=True)
    if len(sys.argv) > 2:
        time.sleep(float(sys.argv[2]))
        sys.exit(0)
    while True:
        signal.pause()  # idle until the kernel stops it
