"""Sends to the agent named by its first argument, first by name then by the id that answered,
waiting for each reply; reports both replies and the send results."""
import json
import sys

from clove_sdk import CloveClient

out = {}
with CloveClient(timeout=10) as c:
    out["me"] = c.hello()["agent_id"]
    out["by_name"] = c.send_message({"n": 1}, to_name=sys.argv[1])
    out["reply1"] = c.recv_messages(timeout=10)["messages"]
    out["by_id"] = c.send_message({"n": 2}, to=out["reply1"][0]["from_id"])
    out["reply2"] = c.recv_messages(timeout=10)["messages"]
print("REPORT " + json.dumps(out), flush=True)
