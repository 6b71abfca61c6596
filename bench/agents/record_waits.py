"""Bench agent for replay speed: waits in the kernel (ten 100 ms receives that time out) between
bursts of NOOPs, like an agent waiting on messages or a device. Args: ``NOOPS`` per burst."""

import sys

from clove_sdk import CloveClient

noops = int(sys.argv[1]) if len(sys.argv) > 1 else 50
with CloveClient() as c:
    for burst in range(10):
        for n in range(noops):
            c.noop(f"{burst}.{n}")
        c.recv_messages(timeout=0.1)
    c.exit()
