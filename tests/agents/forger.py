"""Tries to pass itself off as another agent through the message body and envelope."""
import json
import signal

import msgpack
import zmq

from clove_sdk import CloveClient, wire

out = {}
with CloveClient(timeout=10) as client:
    out["hello"] = client.hello()
    for label, body in (("body_agent_id", {"agent_id": 1}), ("body_name", {"name": "victim"})):
        try:
            out[label] = client.call("hello", **body)
        except Exception as err:
            out[label] = {"error": type(err).__name__, "code": getattr(err, "code", None)}
    # An envelope with an extra identity field.
    import os

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.connect(os.environ["CLOVE_AGENT_ENDPOINT"])
    payload = msgpack.packb({"id": 7, "call": "hello", "body": {}, "agent_id": 1}, use_bin_type=True)  # an envelope the SDK would never build
    sock.send_multipart([wire.PROTOCOL, wire.KIND_REQUEST, payload])
    if sock.poll(5000):
        reply = wire.decode_reply(sock.recv_multipart())
        out["envelope_agent_id"] = {"ok": reply.ok, "code": reply.error.code if reply.error else None}
    sock.close(0)
    try:
        client.call("agent.kill", name="victim")
        out["kill_victim"] = "allowed"
    except Exception as err:
        out["kill_victim"] = getattr(err, "code", repr(err))
print("REPORT " + json.dumps(out), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
