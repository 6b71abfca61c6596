"""Agent-to-agent ping-pong for bench/messaging.py.

``pong``: registers "pong", then answers every message to its sender until told to stop.
``ping N WARMUP``: sends to "pong" and waits for each answer, N + WARMUP times.

Both sides timestamp each message just before ``send_message`` and read the clock as their
blocking ``recv_messages`` returns (CLOCK_MONOTONIC is shared by every process, sandboxed or
not). A sample counts only when the receiver was already waiting before the send began, so it
is one send-to-blocked-receiver hop through the kernel, not time spent queued while the receiver
was busy with its own send. Ping also times each whole round trip. One JSON line each at the end.
"""
import json
import sys
import time

from clove_sdk import CloveClient


def receive(c, waiting_since, warm, samples):
    got = c.recv_messages(max_messages=1, timeout=10)["messages"]
    now = time.monotonic_ns()
    if got and not warm and "t" in got[0]["message"] and got[0]["message"]["t"] >= waiting_since:
        samples.append(now - got[0]["message"]["t"])
    return got, now


with CloveClient(timeout=30) as c:
    one_way, rtt, seen = [], [], 0
    if sys.argv[1] == "pong":
        warmup = int(sys.argv[2])
        c.register_name("pong")
        print("READY", flush=True)
        while True:
            got, _ = receive(c, time.monotonic_ns(), seen < warmup, one_way)
            if not got:
                continue
            seen += 1
            if got[0]["message"].get("stop"):
                break
            c.send_message({"t": time.monotonic_ns()}, to=got[0]["from_id"])
        print(json.dumps({"role": "pong", "one_way": one_way, "seen": seen}), flush=True)
    else:
        n, warmup = int(sys.argv[2]), int(sys.argv[3])
        for i in range(n + warmup):
            t0 = time.monotonic_ns()
            c.send_message({"t": t0}, to_name="pong")
            _, now = receive(c, time.monotonic_ns(), i < warmup, one_way)
            if i >= warmup:
                rtt.append(now - t0)
        c.send_message({"stop": True}, to_name="pong")
        print(json.dumps({"role": "ping", "one_way": one_way, "rtt": rtt}), flush=True)
