"""An agent whose every input comes through the kernel, so a recording of it replays exactly:
its identity, the kernel's clock and a seed, state, a message round trip, the loopback device's
stream and an LLM answer. Prints everything it got as one REPORT line and exits 0.

argv[1] names the agent to message (default "echo"); $RECORD_MESSAGE is the message's text
(default "hello"): changing it makes a replay of an earlier recording diverge at ``ipc.send``.
$RECORD_EXIT is its exit status (default 0).
"""

import json
import os
import random
import sys

from clove_sdk import CloveClient

peer = sys.argv[1] if len(sys.argv) > 1 else "echo"
text = os.environ.get("RECORD_MESSAGE", "hello")
report: dict = {}
with CloveClient(timeout=30) as c:
    me = c.hello()
    report["me"] = [me["agent_id"], me["name"]]
    report["now"] = c.now()
    seed = c.random_seed()
    report["seed"] = seed
    pick = random.Random(seed).randint(0, 10**9)
    report["pick"] = pick
    c.store("rec.blob", {"pick": pick, "raw": b"\x00\x01\xff"}, scope="agent")
    got = c.fetch("rec.blob")["value"]
    report["fetched"] = {"pick": got["pick"], "raw": got["raw"].hex()}
    report["sent"] = c.send_message({"text": text, "pick": pick}, to_name=peer)
    reply = c.recv_messages(timeout=10)
    report["reply"] = [[m["from_name"], m["message"], m.get("age_ms")] for m in reply["messages"]]
    dev = c.device("loop")
    dev.subscribe()
    dev.write(tag="rec", data={"pick": pick})
    report["items"] = dev.recv(max_items=10, timeout=5)
    answer = c.think(f"weather at {pick}")
    report["answer"] = [answer.get("success"), answer.get("content")]
    report["later"] = c.now()
print("REPORT " + json.dumps(report, sort_keys=True, default=repr), flush=True)
sys.exit(int(os.environ.get("RECORD_EXIT", "0")))
