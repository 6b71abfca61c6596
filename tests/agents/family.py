"""Three generations for the child-lifetime tests.

``parent NAME MODE``: spawns NAME-kid (which spawns NAME-grandkid) and tries NAME-free with
``detached=True``; once the grandchild runs it prints a REPORT line, waits for a message, then
ends as MODE says: ``exit`` (status 0), ``crash`` (SIGABRT) or ``stay`` (idles until killed).
``child NAME``: spawns NAME-grandkid, then idles. ``leaf``: idles.
"""

import json
import os
import signal
import sys
import time

from clove_sdk import CloveClient
from clove_sdk.errors import CloveError

ME = os.path.abspath(__file__)


def idle() -> None:
    while True:
        signal.pause()  # until the kernel stops it


role = sys.argv[1]
if role == "leaf":
    idle()
with CloveClient(timeout=20) as c:
    if role == "child":
        c.call("agent.spawn", name=f"{sys.argv[2]}-grandkid", script=ME, args=["leaf"])
        idle()
    name, mode = sys.argv[2], sys.argv[3]
    report: dict = {}
    report["kid"] = c.call("agent.spawn", name=f"{name}-kid", script=ME, args=["child", name], permissions={"can_spawn": True, "max_children": 1})
    try:
        report["free"] = c.call("agent.spawn", name=f"{name}-free", script=ME, args=["leaf"], detached=True)
    except CloveError as err:
        report["free"] = {"code": err.code, "message": err.message}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and {a["name"]: a["state"] for a in c.list_agents()}.get(f"{name}-grandkid") != "running":
        time.sleep(0.05)  # polling the kernel for the grandchild
    print("REPORT " + json.dumps(report), flush=True)
    c.recv_messages(max_messages=1, timeout=60)  # the test's go, once it has seen the family
if mode == "exit":
    sys.exit(0)
if mode == "crash":
    os.abort()
idle()
