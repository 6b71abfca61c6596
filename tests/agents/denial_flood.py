"""Floods the kernel with one syscall as fast as it answers, then reports and waits.

argv[1]: how many calls to make at most; argv[2]: seconds to flood at most (whichever ends first);
argv[3]: the syscall (default ``no.such.call``: every call is a denial; ``noop`` is allowed).
"""
import json
import signal
import sys
import time

from clove_sdk import CloveClient

limit, seconds = int(sys.argv[1]), float(sys.argv[2])
syscall = sys.argv[3] if len(sys.argv) > 3 else "no.such.call"
sent = failed = 0
codes: dict[str, int] = {}
started = time.monotonic()
with CloveClient(timeout=10) as client:
    while sent < limit and time.monotonic() - started < seconds:
        sent += 1
        try:
            client.call(syscall, msg=str(sent))
        except Exception as err:  # an unknown syscall is meant to be refused; count how
            failed += 1
            code = getattr(err, "code", type(err).__name__)
            codes[code] = codes.get(code, 0) + 1
elapsed = time.monotonic() - started
print("REPORT " + json.dumps({"sent": sent, "failed": failed, "codes": codes, "elapsed": elapsed}), flush=True)
signal.pause()  # idle until the kernel stops it
