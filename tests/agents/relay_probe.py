"""Tries the loopback relays of its sandbox and reports each step as one JSON line.

argv[1]: a JSON list of steps, run in order; each reports under its "name":
  {"op": "wait", "path"}                         wait (20 s at most) for a file the test makes
                                                 (a relative path: in its channel dir)
  {"op": "echo", "port", "size"}                 send ``size`` bytes, half-close, read to EOF
  {"op": "connect", "host", "port"}              connect, send, read: what happened
  {"op": "bind", "port"}                         bind and listen on 127.0.0.1:port
  {"op": "hold", "port", "count"}                open ``count`` connections, each echoing, kept open
  {"op": "env"}                                  the proxy and OpenAI variables it was given
  {"op": "die"}                                  SIGKILL itself (after the report)
After each named step it prints ``STEP name result``; at the end ``REPORT {...}``; then idles
until stopped.
"""
import hashlib
import json
import os
import signal
import socket
import sys
import time


def sockets_open():
    """Its socket fds (the directory listing's own fd is gone by the time it is read)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                found.append(int(fd))
        except OSError:
            pass
    return found


# Sockets it inherited (its sandbox's init must not pass it the relays' listeners).
report = {"inherited_sockets": sockets_open()}
held = []
die = False


def pattern(n):
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def outcome(fn):
    try:
        return {"ok": True, "value": fn()}
    except Exception as err:  # the point is to record what failed
        return {"ok": False, "error": type(err).__name__, "errno": getattr(err, "errno", None), "text": str(err)}


def wait(path):
    channel = os.path.dirname(os.environ["CLOVE_AGENT_ENDPOINT"][len("ipc://"):])
    path = os.path.join(channel, path)
    deadline = time.monotonic() + 20
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.02)
    return True


def echo(port, size):
    payload = pattern(size)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while data := sock.recv(1 << 16):
            chunks.append(data)
    got = b"".join(chunks)
    same = got == payload + b"BYE"
    out = {"sent": size, "received": len(got), "same": same, "sha": hashlib.sha256(got).hexdigest()[:12]}
    if not same:
        out["head"] = got[:300].decode(errors="replace")
    return out


def connect(host, port):
    with socket.create_connection((host, port), timeout=3) as sock:
        sock.sendall(b"ping")
        return sock.recv(16).decode(errors="replace")


def bind(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
        return sock.getsockname()[1]
    finally:
        sock.close()


def one_echo(sock):
    sock.sendall(b"ping")
    return sock.recv(16) == b"ping"


def hold(port, count):
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        held.append(sock)
        if not one_echo(sock):
            raise AssertionError("a held connection did not echo")
    return len(held)


OPS = {
    "wait": lambda step: wait(step["path"]),
    "echo": lambda step: echo(step["port"], step["size"]),
    "connect": lambda step: connect(step["host"], step["port"]),
    "bind": lambda step: bind(step["port"]),
    "hold": lambda step: hold(step["port"], step["count"]),
    "recheck": lambda step: all(one_echo(s) for s in held),  # the held connections still echo
}
ENV = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy", "OPENAI_BASE_URL", "OPENAI_API_KEY")

for step in json.loads(sys.argv[1]):
    op = step["op"]
    if op in OPS:
        report[step["name"]] = outcome(lambda: OPS[op](step))  # noqa: B023 - called at once
    elif op == "env":
        report[step["name"]] = {k: os.environ.get(k) for k in ENV}
    elif op == "die":
        die = True
    if "name" in step:  # progress, for a test that acts between steps
        print(f"STEP {step['name']} " + json.dumps(report.get(step["name"])) + f" {time.monotonic():.3f}", flush=True)
report["net_ns"] = os.readlink("/proc/self/ns/net")
print("REPORT " + json.dumps(report), flush=True)
if die:
    os.kill(os.getpid(), signal.SIGKILL)
while True:
    signal.pause()  # idle until the kernel stops it
