"""A tree of processes that would happily outlive its kernel: it forks a busy child, starts a
long command through the kernel (``sleep <argv[1]>``), then ticks noops. On SIGUSR1 it runs a
command through the kernel and prints ``EXEC <result>``; on SIGUSR2 it exits with ``argv[2]``."""

import json
import os
import signal
import sys
import time

from clove_sdk import CloveClient

marker, code = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0
flags = {"exec": False, "exit": False}
signal.signal(signal.SIGUSR1, lambda *_: flags.update(exec=True))
signal.signal(signal.SIGUSR2, lambda *_: flags.update(exit=True))

child = os.fork()
if child == 0:
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    x = 0
    while True:  # busy, and nothing in it knows about the kernel
        x += 1

with CloveClient(timeout=30) as client:
    started = client.exec(["sleep", marker], timeout=3600, async_=True, request_id="long")
    print("READY " + json.dumps({"child": child, "exec": started}), flush=True)
    ticks = 0
    while True:
        client.noop("tick")
        ticks += 1
        if ticks % 20 == 0:
            print(f"ticks={ticks}", flush=True)
        if flags["exec"]:
            flags["exec"] = False
            print("EXEC " + json.dumps(client.exec(["hostname"])), flush=True)
        if flags["exit"]:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            sys.exit(code)
        time.sleep(0.02)
