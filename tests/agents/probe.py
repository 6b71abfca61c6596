"""Reports what the sandbox lets it do, as one JSON line, then waits to be stopped.

argv[1]: a loopback TCP port to try; argv[2]: a host path outside the work dir to try writing.
"""
import json
import os
import signal
import socket
import sys

from clove_sdk import CloveClient

report = {"uid": os.getuid(), "cwd": os.getcwd(), "hostname": socket.gethostname(), "pid": os.getpid()}


def attempt(key, fn):
    try:
        report[key] = {"ok": True, "value": fn()}
    except Exception as err:  # the point is to record what failed
        report[key] = {"ok": False, "error": f"{type(err).__name__}: {err}"}


attempt("tcp", lambda: socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close())
attempt("write_outside", lambda: open(sys.argv[2], "w").write("x"))
attempt("write_work", lambda: open("work.txt", "w").write("x"))
attempt("write_tmp", lambda: open("/tmp/agent-tmp.txt", "w").write("x"))
attempt("tmp_listing", lambda: sorted(os.listdir("/tmp")))
attempt("shadow", lambda: len(open("/etc/shadow").read()))
attempt("kill_init", lambda: os.kill(1, 0))
attempt("inet_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close())
with CloveClient(timeout=10) as client:
    attempt("hello", client.hello)
print("REPORT " + json.dumps(report), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
