"""Bench agent: NOOP round trips from inside the sandbox (the per-agent channel).

Args: ``N WARMUP``. Prints one JSON line ``{"sdk": [ns...], "raw": [ns...]}`` to its log.
"""

import json
import os
import sys
import time

import zmq

from clove_sdk import CloveClient, wire


def timed(fn, n: int, warmup: int) -> list[int]:
    for _ in range(warmup):
        fn()
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def main() -> None:
    n, warmup = int(sys.argv[1]), int(sys.argv[2])
    client = CloveClient()
    sdk = timed(lambda: client.call("noop", msg="x"), n, warmup)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(os.environ["CLOVE_AGENT_ENDPOINT"])
    frames = wire.encode_request(1, "noop", {"msg": "x"})

    def raw() -> None:
        sock.send_multipart(frames)
        sock.recv_multipart()

    raw_ns = timed(raw, n, warmup)
    print(json.dumps({"sdk": sdk, "raw": raw_ns}), flush=True)
    client.exit()


main()
