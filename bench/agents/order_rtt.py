"""Times orders through Clove for bench/trading.py, from inside a sandboxed agent.

``rtt N WARMUP``: submit a resting limit order, wait for its "new" execution report on the
stream; N + WARMUP times. ``rate N``: submit N orders back to back (risk checks and journal on),
then wait for all their acknowledgements. One JSON line."""
import json
import sys
import time

import zmq

from clove_sdk import CloveClient, wire
from clove_sdk.client import default_endpoint

mode, n = sys.argv[1], int(sys.argv[2])
with CloveClient(timeout=30) as c:
    ex = c.device("exchange")
    ex.subscribe(queue=200_000)
    if mode == "rtt":
        warmup, samples = int(sys.argv[3]), []
        for i in range(n + warmup):
            t0 = time.perf_counter_ns()
            cid = ex.submit_order("ACME", "buy", 1, price=50.0 + i * 0.01)["client_id"]
            while not any(x["type"] == "exec" and x["client_id"] == cid and x["status"] == "new" for x in ex.executions(timeout=5)):
                pass
            if i >= warmup:
                samples.append(time.perf_counter_ns() - t0)
            ex.cancel(cid)
        print(json.dumps({"rtt": samples}), flush=True)
    else:
        t0, errors = time.perf_counter(), {}
        if mode == "pipe":
            window = int(sys.argv[3])
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(default_endpoint(None))
            sent_n = answered = 0
            while answered < n:
                while sent_n < n and sent_n - answered < window:
                    i = sent_n
                    args = {"symbol": "SLOW", "side": "buy", "qty": 1 + i % 50, "price": round(5.0 + (i // 50) * 0.01, 2)}
                    sock.send_multipart(wire.encode_request(i, "device.call", {"device": "exchange", "op": "submit_order", "args": args}))
                    sent_n += 1
                if not sock.poll(30_000):
                    break
                reply = wire.decode_reply(sock.recv_multipart())
                answered += 1
                if not reply.ok:
                    errors[reply.error.code] = errors.get(reply.error.code, 0) + 1
            sock.close()
        else:
            for i in range(n):
                ex.submit_order("SLOW", "buy", 1 + i % 50, price=5.0 + (i // 50) * 0.01)  # all distinct: no duplicates
        sent = time.perf_counter() - t0
        acked = 0
        while acked < n:
            got = ex.executions(max_items=5000, timeout=10)
            if not got:
                break
            acked += sum(1 for x in got if x["type"] == "exec" and x["status"] == "new")
        print(json.dumps({"n": n, "submit_s": sent, "all_acked_s": time.perf_counter() - t0, "acked": acked, "errors": errors}), flush=True)
