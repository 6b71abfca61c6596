"""An agent with the spawn right: spawns children within and beyond its own rights and limits."""
import json
import os
import signal
import sys

from clove_sdk import CloveClient

child = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exit_code.py")
out = {}
with CloveClient(timeout=20) as c:
    out["ok"] = c.call("agent.spawn", name=f"{sys.argv[1]}-kid", script=child, args=["0", "30"])
    out["unsandboxed"] = c.spawn(f"{sys.argv[1]}-free", child, sandboxed=False)
    out["more_memory"] = c.spawn(f"{sys.argv[1]}-fat", child, limits={"memory": "1G"})
    out["more_rights"] = c._compat("agent.spawn", name=f"{sys.argv[1]}-boss", script=child, level="unrestricted")
    out["second"] = c.spawn(f"{sys.argv[1]}-kid2", child, args=["0", "30"])
    out["list_kids"] = [a["name"] for a in c.list_agents()]
    try:
        c.call("permissions.set", agent_id=out["ok"]["id"], permissions={"http_domains": ["example.com"]})
        out["raise_child"] = "allowed"
    except Exception as err:  # the point is to record the refusal
        out["raise_child"] = getattr(err, "code", repr(err))
    out["lower_child"] = c.set_permissions(level="minimal", agent_id=out["ok"]["id"])
    out["kill_kid"] = c.kill(name=f"{sys.argv[1]}-kid")
    out["kill_stranger"] = c.kill(name="stranger")
print("REPORT " + json.dumps(out, default=str), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
