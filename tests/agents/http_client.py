"""Fetches from the loopback test server through the kernel (it has no network of its own),
tries what it is not granted, reports, then waits. Args: BASE_URL PORT."""
import json
import signal
import socket
import sys

from clove_sdk import CloveClient

base, port = sys.argv[1], int(sys.argv[2])
out = {}
try:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    out["own_network"] = "connected"
except OSError as err:
    out["own_network"] = f"{type(err).__name__}: {err}"
with CloveClient(timeout=30) as c:
    out["get"] = c.http(base + "/echo?q=1", headers={"X-Clove-Test": "yes"})
    out["post"] = c.http(base + "/echo", method="POST", body="payload", headers={"Content-Type": "text/plain"})
    out["not_found"] = c.http(base + "/status/404")
    binary = c.http(base + "/binary")
    out["binary"] = {"encoding": binary["encoding"], "hex": c.http_body(binary).hex()}
    out["redirect"] = c.http(base + "/redirect?to=" + base + "/echo%3Ffollowed%3D1")
    out["denied_domain"] = c.http(f"http://localhost:{port}/echo")
    out["denied_method"] = c.http(base + "/echo", method="PUT")
    out["bad_scheme"] = c.http("file:///etc/passwd")
    out["host_header"] = c.http(base + "/echo", headers={"Host": "localhost"})
    out["noop"] = c.noop("still here")
print("REPORT " + json.dumps(out), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
