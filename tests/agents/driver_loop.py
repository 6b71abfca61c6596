"""Keeps writing tag "drive" to the loopback device, as a navigator would keep commanding
motors; logs each refusal code once (so a test sees when an interlock blocks it)."""

import time

from clove_sdk import CloveClient
from clove_sdk.errors import CloveError

seen = set()
with CloveClient() as c:
    dev = c.device("loop")
    print("READY", flush=True)
    while True:
        try:
            dev.write(tag="drive")
        except CloveError as err:
            if err.code not in seen:
                seen.add(err.code)
                print(f"REFUSED {err.code} {err.message}", flush=True)
        time.sleep(0.01)  # a 100 Hz control loop
