"""Makes one device call the moment it starts, as a deployment's agent does, and prints
``FIRST <json>`` (the result, or the error's code and message); then idles until stopped.

argv[1] is the loopback device to write to (tag "ok")."""

import json
import signal
import sys

from clove_sdk import CloveClient
from clove_sdk.errors import CloveError

with CloveClient() as c:
    try:
        out = {"ok": c.device(sys.argv[1]).write(tag="ok")}
    except CloveError as err:
        out = {"code": err.code, "message": err.message}
    print("FIRST " + json.dumps(out), flush=True)
    while True:
        signal.pause()  # idle until the kernel stops it
