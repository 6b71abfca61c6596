"""Thinks through the kernel under load. Args: TAG COUNT MAX_TOKENS MODE [WINDOW].

MODE ``async``: keeps up to WINDOW requests outstanding (``async_=True``), topping up as
results arrive; ``sync``: one ``think`` at a time; ``hold``: submits COUNT asynchronously,
prints HELD and then waits forever without collecting anything (to be killed).

Prints READY, waits for a message (the go signal) so every agent starts together, then works,
prints ``REPORT {results: [{code, tokens, queue_wait_ms, content}...]}`` and exits."""
import json
import signal
import sys
import time

from clove_sdk import CloveClient

tag, count, max_tokens, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
window = int(sys.argv[5]) if len(sys.argv) > 5 else count

with CloveClient(timeout=120) as c:
    print("READY", flush=True)
    c.recv_messages(timeout=60)
    results = []
    if mode == "sync":
        for i in range(count):
            r = c.think(f"{tag} request {i}", max_tokens=max_tokens, timeout=120)
            results.append(r)
    else:
        sent = 0
        outstanding = 0
        while sent < count and outstanding < window:
            r = c.think(f"{tag} request {sent}", max_tokens=max_tokens, async_=True, request_id=f"{tag}-{sent}", timeout=120)
            if not r.get("success"):
                results.append(r)
            else:
                outstanding += 1
            sent += 1
        if mode == "hold":
            print("HELD", flush=True)
            while True:
                signal.pause()  # idle until the kernel stops it
        deadline = time.monotonic() + 120
        while outstanding and time.monotonic() < deadline:
            polled = c.poll_async(max_results=100)
            for item in polled.get("results", []):
                results.append(json.loads(item["payload"]))
                outstanding -= 1
                if sent < count:
                    r = c.think(f"{tag} request {sent}", max_tokens=max_tokens, async_=True, request_id=f"{tag}-{sent}", timeout=120)
                    if r.get("success"):
                        outstanding += 1
                    else:
                        results.append(r)
                    sent += 1
            if not polled.get("results"):
                time.sleep(0.01)
    keep = ("success", "code", "tokens", "queue_wait_ms", "attempts", "error")
    print("REPORT " + json.dumps({"tag": tag, "results": [{k: r.get(k) for k in keep} for r in results]}), flush=True)
