"""Sends a non-zero speed command (0x101) at 50 Hz forever, ignoring refusals, for
bench/interlock_latency.py: the navigator still trying to drive while the e-stop is pressed."""
import time

from clove_sdk import CloveClient
from clove_sdk.errors import CloveError

with CloveClient() as c:
    bus = c.device("motor_bus")
    print("READY", flush=True)
    while True:
        try:
            bus.send(id=0x101, data=b"\x58\x02\x58\x02")  # 600 mm/s each side
        except CloveError:
            pass
        time.sleep(0.02)
