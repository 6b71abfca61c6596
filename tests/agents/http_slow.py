"""Makes one slow HTTP request through the kernel and waits for it. Args: URL."""
import sys

from clove_sdk import CloveClient

with CloveClient(timeout=60) as c:
    print("READY", flush=True)
    print("REPLY", c.http(sys.argv[1], timeout=30), flush=True)
