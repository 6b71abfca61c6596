"""A serial agent for the device tests: writes a query, reads two lines back, tries a write
larger than its grant. ``sdk`` uses the device handle; ``pyserial`` unmodified pyserial code on
``clove://gps``. One REPORT line."""

import json
import sys

from clove_sdk.errors import CloveError

mode = sys.argv[1]
report: dict = {}
if mode == "sdk":
    from clove_sdk import CloveClient

    with CloveClient() as c:
        gps = c.device("gps")
        gps.subscribe()
        print("READY", flush=True)
        report["write"] = gps.write(data=b"PING\n")
        report["lines"] = [gps.readline(timeout=10).decode(), gps.readline(timeout=10).decode()]
        try:
            gps.write(data=b"x" * 100)
            report["big"] = "ok"
        except CloveError as err:
            report["big"] = err.code
else:
    import serial

    import clove_sdk.pyserial  # noqa: F401 - registers clove://

    with serial.serial_for_url("clove://gps", timeout=10) as port:
        print("READY", flush=True)
        port.write(b"PING\n")
        report["lines"] = [port.readline().decode(), port.readline().decode()]
        try:
            port.write(b"x" * 100)
            report["big"] = "ok"
        except serial.SerialException as err:
            report["big"] = str(err)
print("REPORT " + json.dumps(report), flush=True)
