"""First run: start a long command asynchronously, then die (restart: on-failure). Second run:
collect what the kernel answered for that command, report it, and wait."""

import json
import os
import signal
import time

from clove_sdk import CloveClient


def sleeper_running() -> bool:
    """The command runs in this agent's pid namespace, so this /proc shows it."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open(f"/proc/{pid}/cmdline", "rb").read() == b"tail\x00-s\x0038\x00-f\x00/dev/null\x00":
                return True
        except OSError:
            pass
    return False


with CloveClient(timeout=30) as client:
    if not os.path.exists("first-run-done"):
        open("first-run-done", "w").close()
        print("START " + json.dumps(client.exec("tail -s 38 -f /dev/null", async_=True, request_id="long")), flush=True)
        deadline = time.monotonic() + 10
        while not sleeper_running() and time.monotonic() < deadline:
            time.sleep(0.02)
        print("SLEEPER " + json.dumps(sleeper_running()), flush=True)
        os._exit(1)
    results, deadline = [], time.monotonic() + 20
    while not results and time.monotonic() < deadline:
        results = client.poll_async()["results"]
        time.sleep(0.05)
print("REPORT " + json.dumps(results), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
