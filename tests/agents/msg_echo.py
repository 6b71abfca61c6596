"""Registers the name given as its first argument and answers every message to its sender:
``{"echo": <message>, "by": <name>}``. Prints READY once registered."""
import sys

from clove_sdk import CloveClient

with CloveClient(timeout=10) as c:
    r = c.register_name(sys.argv[1])
    print("READY" if r["success"] else f"REGISTER FAILED {r}", flush=True)
    while True:
        for m in c.recv_messages(max_messages=50, timeout=5)["messages"]:
            c.send_message({"echo": m["message"], "by": sys.argv[1]}, to=m["from_id"])
