"""Fills what it is told to until the filesystem says no; reports one JSON line.

argv[1]:
  tmp_files   empty files in /tmp until creating one fails (the inode cap)
  tmp_bytes   1 MiB writes to one file in /tmp until a write fails (the size cap)
  work_bytes  1 MiB writes to fill.bin in the work dir until a write fails, then exits 3 so that
              an on-failure restart runs it again; a run that finds fill.bin prints
              "PERSISTED <its size>" (the work dir outlived the incarnation) and waits.
"""
import json
import os
import signal
import sys

MiB = 1 << 20
mode = sys.argv[1]
report = {"mode": mode}


def fill(path):
    written = 0
    chunk = b"\xa5" * MiB
    try:
        with open(path, "wb", buffering=0) as f:
            while written < 1 << 30:
                written += f.write(chunk)
            os.fsync(f.fileno())
    except OSError as err:
        report["errno"] = err.errno
    report["bytes"] = written


if mode == "tmp_files":
    count = 0
    try:
        while count < 1_000_000:
            open(f"/tmp/f{count}", "w").close()
            count += 1
    except OSError as err:
        report["errno"] = err.errno
    report["files"] = count
elif mode == "tmp_bytes":
    fill("/tmp/fill.bin")
elif mode == "work_bytes":
    if os.path.exists("fill.bin"):
        print(f"PERSISTED {os.path.getsize('fill.bin')}", flush=True)
        while True:
            signal.pause()
    fill("fill.bin")
    print("REPORT " + json.dumps(report), flush=True)
    sys.exit(3)
print("REPORT " + json.dumps(report), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
