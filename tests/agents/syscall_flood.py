"""Floods the kernel with one kind of syscall as fast as it can, until stopped.

argv[1]: ``noop`` (cheap calls), ``unknown`` (denied calls) or ``state`` (64 KiB state writes).
Prints ``FLOODING`` once its first call returned, then a running count now and then."""

import sys

from clove_sdk import CloveClient, CloveError

KIND = sys.argv[1]
BLOB = "x" * (64 << 10)

with CloveClient(timeout=30) as client:
    count = 0
    while True:
        try:
            if KIND == "noop":
                client.noop("flood")
            elif KIND == "unknown":
                client.call("no.such.call")
            else:
                client.store(f"k{count % 16}", BLOB)
        except CloveError:
            pass
        count += 1
        if count == 1:
            print("FLOODING", flush=True)
        if count % 5000 == 0:
            print(f"calls={count}", flush=True)
