"""A hostile agent: forks without end."""
import os
import time

made = 0
while True:
    try:
        if os.fork() == 0:
            time.sleep(3600)
            os._exit(0)
        made += 1
    except OSError as err:
        print(f"fork refused after {made} processes: {err.strerror}", flush=True)
        time.sleep(3600)
