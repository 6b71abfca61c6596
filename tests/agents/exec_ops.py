"""Runs the calls listed as JSON in argv[1] (``[[name, kwargs], ...]``): SDK methods, or local
file actions done by the agent itself; prints one REPORT line with every outcome, then waits.
Bytes travel as ``{"bytes_hex": ...}`` both ways."""

import json
import os
import signal
import sys
import time

from clove_sdk import CloveClient

LOCAL = {
    "symlink": lambda src, dst: os.symlink(src, dst),
    "write_local": lambda path, text: open(path, "w").write(text),
    "read_local": lambda path: open(path, "rb").read(),
    "exists_local": lambda path: os.path.exists(path),
    "owner_local": lambda path: os.stat(path).st_uid,
    "mkdir_local": lambda path: os.mkdir(path),
    "chmod_local": lambda path, mode: os.chmod(path, mode),
}


def encode(value):
    if isinstance(value, bytes):
        return {"bytes_hex": value.hex()}
    return repr(value)


def decode(kwargs):
    """``{"bytes_hex": "ff00"}`` stands for bytes (JSON has none)."""
    return {
        k: bytes.fromhex(v["bytes_hex"]) if isinstance(v, dict) and "bytes_hex" in v else v
        for k, v in kwargs.items()
    }


def await_async(client, count=1, timeout=30.0):
    """Poll ``poll_async`` until ``count`` results arrived (or ``timeout`` seconds passed)."""
    results, deadline = [], time.monotonic() + timeout
    while len(results) < count and time.monotonic() < deadline:
        results += client.poll_async()["results"]
        time.sleep(0.05)
    return results


def main() -> None:
    results = []
    with CloveClient(timeout=60) as client:
        for name, raw in json.loads(sys.argv[1]):
            kwargs = decode(raw)
            try:
                if name == "await_async":
                    value = await_async(client, **kwargs)
                else:
                    value = LOCAL[name](**kwargs) if name in LOCAL else getattr(client, name)(**kwargs)
                results.append({"ok": True, "value": value})
            except Exception as err:  # the point is to record what failed
                results.append(
                    {"ok": False, "error": f"{type(err).__name__}: {err}", "code": getattr(err, "code", None)}
                )
    print("REPORT " + json.dumps(results, default=encode), flush=True)
    while True:
        signal.pause()  # idle until the kernel stops it


if __name__ == "__main__":
    main()
