"""Walks the whole CloveClient API once and reports what came back (ids left out, so two runs
compare equal). argv: the operator's session id, an HTTP URL it may GET."""
import json
import sys
import time

from clove_sdk import CloveClient

operator_id, url = int(sys.argv[1]), sys.argv[2]
r = {}
with CloveClient(timeout=20) as c:
    me = c.hello()["agent_id"]
    r["register"] = c.register_name("tourist")["name"]
    r["send_self"] = c.send_message({"n": 1}, to=me)["delivered_to"] == me
    r["recv"] = [m["message"] for m in c.recv_messages(10)["messages"]]
    r["send_operator"] = c.send_message({"hello": "operator"}, to=operator_id)["success"]
    r["send_nobody"] = c.send_message({"x": 1}, to_name="nobody-here")["code"]
    r["store"] = [c.store("tour:g", {"v": 1})["success"], c.store("tour:a", [1, 2], scope="agent")["success"],
                  c.store("tour:s", "s", scope="session", ttl=60)["success"]]  # fmt: skip
    r["fetch"] = {k: c.fetch(k)["value"] for k in ("tour:g", "tour:a", "tour:s")}
    keys = sorted(c.list_keys("tour:")["keys"])
    r["keys"] = keys
    r["deleted"] = [c.delete_key(k)["deleted"] for k in keys]
    r["subscribe"] = c.subscribe(["tour.evt"])["subscribed"]
    r["emit"] = c.emit_event("tour.evt", {"x": 1})["success"]
    r["events"] = [(e["type"], e["data"]) for e in c.poll_events(timeout=5)["events"]]
    r["unsubscribe"] = c.unsubscribe(["tour.evt"])["unsubscribed"]
    r["write"] = c.write_file("notes.txt", "hello")["bytes_written"]
    r["append"] = c.write_file("notes.txt", " world", mode="append")["bytes_written"]
    r["read"] = c.read_file("notes.txt")["content"]
    r["read_tmp"] = (c.write("/tmp/t.txt", "tmp"), c.read("/tmp/t.txt"))
    r["read_denied"] = c.read_file("/etc/hostname")["code"]
    r["exec"] = {k: v for k, v in c.exec("echo hi; echo err >&2; exit 3").items() if k in ("stdout", "stderr", "exit_code")}
    r["http"] = c.http(url)["status_code"]
    r["http_denied"] = c.http("http://example.com/")["code"]
    accepted = [c.exec("echo async", async_=True, request_id="e1"), c.http(url, async_=True, request_id="h1")]
    r["accepted"] = [a["status"] for a in accepted]
    results = []
    deadline = time.monotonic() + 20
    while len(results) < 2 and time.monotonic() < deadline:
        results.extend(c.poll_async(10)["results"])
        time.sleep(0.05)
    r["async"] = sorted((x["request_id"], x["opcode_name"], json.loads(x["payload"])["success"]) for x in results)
    r["level"] = c.get_permissions()["level"]
    r["metrics"] = [c.get_agent_metrics()["agent_id"] == me, "cpu" in c.get_system_metrics(), c.get_all_agent_metrics()["success"]]
    r["think"] = c.think("hello")["success"]
    r["exit"] = c.exit()
print("REPORT " + json.dumps(r, sort_keys=True), flush=True)
