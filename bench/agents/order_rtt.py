"""Times orders through Clove for bench/trading.py, from inside a sandboxed agent.

``rtt N WARMUP``: submit a resting limit order, wait for its "new" execution report on the
stream; N + WARMUP times. ``rate N``: submit N orders back to back (risk checks and journal on),
then wait for all their acknowledgements; ``pipe N K``: the same with K orders in flight
(``CloveClient.call_many``). One JSON line."""
import json
import sys
import time

from clove_sdk import CloveClient
from clove_sdk.errors import CloveError

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
        if mode == "pipe":  # K orders in flight through the SDK's call_many
            window = int(sys.argv[3])

            def orders():
                for i in range(n):
                    args = {"symbol": "SLOW", "side": "buy", "qty": 1 + i % 50, "price": round(5.0 + (i // 50) * 0.01, 2)}
                    yield "device.call", {"device": "exchange", "op": "submit_order", "args": args}

            for outcome in c.call_many(orders(), window=window):
                if isinstance(outcome, CloveError):
                    errors[outcome.code] = errors.get(outcome.code, 0) + 1
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
