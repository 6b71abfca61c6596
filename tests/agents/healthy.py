"""A well-behaved agent: answers a noop round trip in a loop and reports its count."""
import time

from clove_sdk import CloveClient

with CloveClient(timeout=10) as client:
    count = 0
    while True:
        client.noop("tick")
        count += 1
        if count % 50 == 0:
            print(f"ticks={count}", flush=True)
        time.sleep(0.01)
