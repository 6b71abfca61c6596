"""Reads its permissions, lowers them, then tries to raise them back."""
import json
import signal

from clove_sdk import CloveClient

with CloveClient(timeout=10) as c:
    out = {"before": c.get_permissions()}
    out["raise"] = c.set_permissions(level="unrestricted")
    out["lower"] = c.set_permissions(level="readonly")
    out["after"] = c.get_permissions()
    out["raise_again"] = c.set_permissions(level="standard")
print("REPORT " + json.dumps(out), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
