"""A CAN agent for the device tests; prints one REPORT line.

``sdk``: sends 0x101 (granted) and 0x200 (not), then collects frames until it sees data b"end".
``pycan``: the same through unmodified python-can code (``interface="clove"``).
``burst``: 50 sends as fast as it can; ``nogrant``: one send and one receive.
"""

import json
import sys
import time

from clove_sdk import CloveClient
from clove_sdk.errors import CloveError

mode = sys.argv[1]
report: dict = {}
if mode == "sdk":
    with CloveClient() as c:
        bus = c.device("bus")
        bus.subscribe()
        print("READY", flush=True)
        report["allowed"] = bus.send(id=0x101, data=b"\x01\x02")
        try:
            bus.send(id=0x200, data=b"\x00")
            report["denied"] = None
        except CloveError as err:
            report["denied"] = err.code
        seen = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(f["data"] == b"end" for f in seen):
            seen.extend(bus.recv(max_items=100, timeout=1))
        report["ids"] = [f["id"] for f in seen]
elif mode == "pycan":
    import can

    with can.Bus(interface="clove", channel="bus") as bus:
        print("READY", flush=True)
        bus.send(can.Message(arbitration_id=0x102, data=[7, 7], is_extended_id=False))
        try:
            bus.send(can.Message(arbitration_id=0x300, data=[1], is_extended_id=False))
            report["denied"] = None
        except can.CanOperationError as err:
            report["denied"] = str(err)
        ids = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = bus.recv(timeout=1)
            if msg is None:
                continue
            ids.append(msg.arbitration_id)
            if bytes(msg.data) == b"end":
                break
        report["ids"] = ids
elif mode in ("burst", "nogrant"):
    with CloveClient() as c:
        bus = c.device("bus")
        report["listed"] = [d["name"] for d in c.list_devices()]
        codes: dict = {}
        for _ in range(50 if mode == "burst" else 1):
            try:
                bus.send(id=0x101, data=b"\x00")
                codes["ok"] = codes.get("ok", 0) + 1
            except CloveError as err:
                codes[err.code] = codes.get(err.code, 0) + 1
        report["send"] = codes
        try:
            bus.recv(timeout=0)
            report["recv"] = "ok"
        except CloveError as err:
            report["recv"] = err.code
print("REPORT " + json.dumps(report), flush=True)
