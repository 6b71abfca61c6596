"""Bench agent for the kernel soak: a steady mix of syscalls until killed.

argv: ``INDEX PEERS PERIOD``. Every ``PERIOD`` seconds one round: state (a bounded set of keys
in its agent scope, one with a TTL, a fetch, a listing now and then), a message to the next
agent by name (``soak{INDEX+1}``) and a drain of its own mailbox, an event emitted and its
subscription polled, a file written and read back. Refusals (a peer being respawned, a full
mailbox, a quota) are counted, not fatal: the point is the kernel's memory, not the agent's.
Prints ``SOAKING`` after its first round."""

import sys
import time

from clove_sdk import CloveClient, CloveError

INDEX, PEERS, PERIOD = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
PEER = f"soak{(INDEX + 1) % PEERS}"
VALUE = "v" * 1024
TEXT = "t" * 2048


def one_round(client: CloveClient, n: int) -> None:
    client.store(f"k{n % 8}", {"n": n, "pad": VALUE}, scope="agent")
    client.store(f"ttl{n % 16}", n, scope="agent", ttl=1.0)
    client.fetch(f"k{(n + 3) % 8}", scope="agent")
    if n % 20 == 0:
        client.list_keys(scope="agent")
    try:
        client.send_message({"n": n, "from": INDEX}, to_name=PEER)
    except CloveError:
        pass  # the peer is being respawned, or its mailbox is full
    client.recv_messages(max_messages=10)
    client.emit_event("custom.soak", {"n": n, "from": INDEX})
    client.poll_events(max_events=10)
    client.write(f"f{n % 4}.txt", TEXT)
    client.read(f"f{n % 4}.txt")


with CloveClient(timeout=60) as client:
    client.subscribe(["custom.soak"])
    refused = 0
    n = 0
    while True:
        started = time.monotonic()
        try:
            one_round(client, n)
        except CloveError:
            refused += 1
        if n == 0:
            print("SOAKING", flush=True)
        n += 1
        time.sleep(max(0.0, PERIOD - (time.monotonic() - started)))
