"""An exchange agent for the trading tests; prints one REPORT line.

``limits``: an order, one in a symbol it has no grant for, one above the grant's size, one that
would break its position limit, one far from the market, one reusing the first one's client id. ``burst N``: N orders at once, counting
refusal reasons. ``nogrant``: one order without any grant."""

import json
import sys

from clove_sdk import CloveClient
from clove_sdk.errors import CloveError


def attempt(action):
    try:
        action()
        return ["ok", None]
    except CloveError as err:
        return [err.code, err.details.get("reason")]


mode = sys.argv[1]
report: dict = {}
with CloveClient() as c:
    ex = c.device("exchange")
    if mode == "limits":
        report["first"] = ex.submit_order("ACME", "buy", 10, price=90.0)
        report["bolt"] = attempt(lambda: ex.submit_order("BOLT", "buy", 1, price=25.0))
        report["big"] = attempt(lambda: ex.submit_order("ACME", "buy", 500, price=90.0))
        report["position"] = attempt(lambda: ex.submit_order("ACME", "buy", 45, price=90.0))
        report["collar_or_ok"] = attempt(lambda: ex.submit_order("ACME", "sell", 1, price=500.0))
        report["own_orders"] = len(ex.orders())
        report["dup"] = attempt(lambda: ex.submit_order("ACME", "buy", 1, price=89.0, client_id=report["first"]["client_id"]))
    elif mode == "burst":
        sent, reasons = 0, []
        for i in range(int(sys.argv[2])):
            try:
                ex.submit_order("ACME", "buy", 1, price=80.0 + i * 0.01)
                sent += 1
            except CloveError as err:
                reasons.append(err.details.get("reason"))
        report.update(sent=sent, reasons=reasons)
    elif mode == "nogrant":
        report["submit"] = attempt(lambda: ex.submit_order("ACME", "buy", 1, price=90.0))[0]
print("REPORT " + json.dumps(report), flush=True)
