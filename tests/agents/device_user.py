"""Uses the loopback device as its grant allows and prints what happened as a REPORT line.

argv[1] is a mode: "roundtrip" writes tagged items and receives them back; "forbidden" tries
a tag, an op and a device it has no grant for; "burst" writes 50 times as fast as it can.
"""

import json
import sys

from clove_sdk import CloveClient
from clove_sdk.errors import CloveError

mode = sys.argv[1]
report: dict = {}
with CloveClient() as c:
    dev = c.device("loop")
    if mode == "roundtrip":
        report["list"] = [d["name"] for d in c.list_devices()]
        dev.subscribe()
        report["write"] = dev.write(tag="ok", data={"n": 1})
        report["write_other"] = dev.write(tag="other", data=2) if "other" in sys.argv[2:] else None
        items = dev.recv(max_items=10, timeout=5)
        report["items"] = [(i["tag"], i["data"]) for i in items]
    elif mode == "forbidden":
        for label, action in (
            ("tag", lambda: dev.write(tag="secret")),
            ("op", lambda: dev.crash()),
            ("device", lambda: c.device("other").write(tag="ok")),
        ):
            try:
                action()
                report[label] = "allowed"
            except CloveError as err:
                report[label] = err.code
    elif mode == "watch":  # collect until the operator writes data "end"
        dev.subscribe()
        print("READY", flush=True)
        seen: list = []
        while not any(i["data"] == "end" for i in seen):
            got = dev.recv(max_items=100, timeout=10)
            if not got:
                break
            seen.extend(got)
        report["tags"] = [i["tag"] for i in seen]
    elif mode == "burst":
        allowed, refused, codes = 0, 0, set()
        for _ in range(50):
            try:
                dev.write(tag="ok")
                allowed += 1
            except CloveError as err:
                refused += 1
                codes.add(err.code)
        report.update(allowed=allowed, refused=refused, codes=sorted(codes))
print("REPORT " + json.dumps(report), flush=True)
