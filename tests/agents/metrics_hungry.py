"""Grows its memory 1 MiB at a time, watching its own metrics, until the cgroup's usage reaches
the fraction of its limit given as its first argument; then holds it. Prints each step."""
import json
import signal
import sys

from clove_sdk import CloveClient

target = float(sys.argv[1])
hoard = []
with CloveClient(timeout=10) as c:
    while True:
        m = c.get_agent_metrics()
        cg = m["cgroup"]
        if cg["memory_current"] >= target * cg["memory_limit"]:
            break
        chunk = bytearray(1 << 20)
        for i in range(0, len(chunk), 4096):
            chunk[i] = 1
        hoard.append(chunk)
    print("HOLDING " + json.dumps({"rss": m["process"]["memory"]["rss"], "cgroup": cg}), flush=True)
    while True:
        signal.pause()  # idle until the kernel stops it
