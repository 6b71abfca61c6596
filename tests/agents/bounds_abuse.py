"""Tries to make the kernel hold more than its bounds on this agent's behalf (argv[1]: JSON
``{"mode": ..., ...}``), prints one REPORT line, then waits for an ``ipc`` message ``{"go": 1}``
and prints a DRAINED line with what it then collected.

Modes:
  async      n async execs printing ``size`` random bytes each, never polled until "go"
  events     subscribe to ``abuse.evt``, emit n events of ``size`` bytes, never poll until "go"
  subscribe  n subscribe calls of one new type each, then one call with ``bulk`` types
  send       n messages of ``size`` bytes to ``to_name`` (which never receives)
"""
import json
import signal
import sys
import time

from clove_sdk import CloveClient

args = json.loads(sys.argv[1])
mode = args["mode"]
report = {}


def refusal(reply):
    return {"code": reply.get("code"), "details": reply.get("details")}


def abuse_async(c):
    # Random bytes decode to text full of U+FFFD: the case that JSON-escaping blew up 6.5x.
    command = f"head -c {args['size']} /dev/urandom"
    accepted, refused, retries = [], [], 0
    for i in range(args["n"]):
        while True:
            r = c.exec(command, async_=True, request_id=f"a{i}")
            if r.get("success"):
                accepted.append(r["request_id"])
                break
            if (r.get("details") or {}).get("max_running"):  # too many commands at once: not the bound under test
                retries += 1
                time.sleep(0.02)
                continue
            refused.append(refusal(r))
            break
    report.update(accepted=accepted, refused=refused, retries=retries)


def drain_async(c):
    results = []
    deadline = time.monotonic() + 60
    while len(results) < len(report["accepted"]) and time.monotonic() < deadline:
        got = c.poll_async(max_results=5)["results"]
        results += [
            {"request_id": x["request_id"], "opcode_name": x["opcode_name"], "payload_type": type(x["payload"]).__name__,
             "success": (p := json.loads(x["payload"]))["success"], "code": p.get("code"),
             "details": p.get("details"), "stdout_len": len(p.get("stdout") or "")}
            for x in got
        ]
        if not got:
            time.sleep(0.05)
    after = c.exec("true", async_=True, request_id="after-drain")
    return {"results": results, "after_drain": after.get("status") or after.get("code")}


def abuse_events(c):
    report["subscribe"] = c.subscribe(["abuse.evt"])
    blob = "e" * args["size"]
    emitted, codes = 0, []
    for _ in range(args["n"]):
        r = c.emit_event("abuse.evt", blob)
        if r.get("success"):
            emitted += 1
        else:
            codes.append(r.get("code"))
    report.update(emitted=emitted, codes=codes)
    if args.get("too_big"):
        report["too_big"] = refusal(c.emit_event("abuse.evt", "b" * args["too_big"]))


def drain_events(c):
    events, dropped, dropped_bytes = [], 0, 0
    while True:
        r = c.poll_events(max_events=50)
        events += [len(e["data"]) for e in r["events"]]
        dropped, dropped_bytes = r["dropped"], r.get("dropped_bytes")
        if not r["events"]:
            break
    return {"received": len(events), "sizes": sorted(set(events)), "dropped": dropped, "dropped_bytes": dropped_bytes}


def abuse_subscribe(c):
    sizes, ok, refused = [], 0, []
    for i in range(args["n"]):
        r = c.subscribe([f"t.{i}"])
        sizes.append(len(json.dumps(r)))
        if r.get("success"):
            ok += 1
        else:
            refused.append(refusal(r))
    t = time.monotonic()
    bulk = c.subscribe([f"bulk.{i}" for i in range(args["bulk"])])
    report.update(
        ok=ok, refused=len(refused), first_refusal=refused[0] if refused else None, last=r,
        reply_sizes=[min(sizes), max(sizes)], bulk=refusal(bulk) if not bulk.get("success") else {"count": bulk.get("count")},
        bulk_seconds=time.monotonic() - t, again=c.subscribe(["t.0"]),
    )


def abuse_send(c):
    blob = "m" * args["size"]
    sent, failure = 0, None
    for _ in range(args["n"]):
        r = c.send_message({"blob": blob}, to_name=args["to_name"])
        if not r.get("success"):
            failure = refusal(r)
            break
        sent += 1
    report.update(sent=sent, failure=failure)


with CloveClient(timeout=60) as c:
    {"async": abuse_async, "events": abuse_events, "subscribe": abuse_subscribe, "send": abuse_send}[mode](c)
    print("REPORT " + json.dumps(report), flush=True)
    drain = {"async": drain_async, "events": drain_events}.get(mode)
    if drain is not None:
        while not any(m["message"].get("go") for m in c.recv_messages(timeout=120)["messages"]):
            pass
        print("DRAINED " + json.dumps(drain(c)), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
