"""An abusive agent for the containment benchmark: one kind of flood, as fast as it can.

argv[1] is the kind: ``noop``, ``denied`` (unknown syscalls), ``state`` (64 KiB values),
``subscribe`` (ever new event types), ``events`` (512 KiB custom events to a subscriber that
never polls), ``messages`` (256 KiB messages to a recipient that never reads, argv[2]) or
``files`` (1 MiB file writes). Refusals (quota, mailbox full, rate) are counted, not fatal.
Prints ``FLOODING`` after its first call, then ``calls=N refused=M`` now and then."""

import sys

from clove_sdk import CloveClient, CloveError

KIND = sys.argv[1]
BIG = "x" * (64 << 10)
HUGE = "y" * (512 << 10)
MESSAGE = {"blob": "z" * (256 << 10)}
FILE = b"f" * (1 << 20)


def once(client: CloveClient, n: int) -> None:
    if KIND == "noop":
        client.noop("flood")
    elif KIND == "denied":
        client.call("no.such.call")
    elif KIND == "state":
        client.store(f"k{n % 16}", BIG)
    elif KIND == "subscribe":
        client.subscribe([f"custom.flood{n}.{i}" for i in range(50)])
    elif KIND == "events":
        client.emit_event("custom.flood", {"blob": HUGE})
    elif KIND == "messages":
        client.send_message(MESSAGE, to_name=sys.argv[2])
    elif KIND == "files":
        client.write(f"flood{n % 8}.bin", FILE)
    else:
        raise SystemExit(f"unknown flood kind {KIND!r}")


with CloveClient(timeout=60) as client:
    calls = refused = 0
    while True:
        try:
            once(client, calls)
        except CloveError:
            refused += 1
        calls += 1
        if calls == 1:
            print("FLOODING", flush=True)
        if calls % 2000 == 0:
            print(f"calls={calls} refused={refused}", flush=True)
