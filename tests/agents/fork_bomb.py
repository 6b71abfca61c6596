"""Forks until the PIDs limit says no, then reports and waits."""
import os
import signal
import time

children = 0
failures = 0
while failures < 50:
    try:
        pid = os.fork()
    except OSError as err:
        failures += 1
        if failures == 1:
            print(f"fork failed after {children} children: {err.strerror}", flush=True)
        time.sleep(0.01)
        continue
    if pid == 0:
        signal.pause()
        os._exit(0)
    children += 1
print(f"done children={children}", flush=True)
signal.pause()
