"""Looks for the kernel's state dir from inside its sandbox; reports one JSON line, then waits.

argv[1]: the state dir; argv[2:]: paths in or near it the agent must neither list, read nor
connect to (other agents' dirs and sockets, the journal, the control socket).
"""
import json
import os
import signal
import socket
import sys

from clove_sdk import CloveClient

state_dir, secrets = sys.argv[1], sys.argv[2:]


def outcome(fn):
    try:
        return {"ok": True, "value": fn()}
    except Exception as err:  # the point is to record what failed
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}


def connect(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(path)


def listable(root):
    """Every path below ``root`` (relative) that some listing showed."""
    seen, todo = [], [root]
    while todo:
        here = todo.pop()
        try:
            names = os.listdir(here)
        except OSError:
            continue
        for name in names:
            path = os.path.join(here, name)
            seen.append(os.path.relpath(path, root))
            if os.path.isdir(path) and not os.path.islink(path):
                todo.append(path)
    return sorted(seen)


def read_one(path):
    with open(path, "rb") as f:
        return len(f.read(1))


report = {
    "endpoint": os.environ["CLOVE_AGENT_ENDPOINT"],
    "visible": listable(state_dir),
    "present": [path for path in secrets if os.path.lexists(path)],
    "secrets": {
        path: {"list": outcome(lambda p=path: os.listdir(p)), "read": outcome(lambda p=path: read_one(p)), "connect": outcome(lambda p=path: connect(p))}
        for path in secrets
    },
    "write_tmp": outcome(lambda: open("/tmp/snoop.txt", "w").write("x")),
    "write_work": outcome(lambda: open("work.txt", "w").write("x")),
}
with CloveClient(timeout=10) as client:
    report["hello"] = outcome(client.hello)
print("REPORT " + json.dumps(report), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
