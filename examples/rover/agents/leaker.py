"""A leaking agent: grabs 8 MiB every 100 ms and never lets go.

Each block is written to (one byte per page), so the memory is really resident and charged to
the agent's cgroup. At its limit (64M in the rover deployment) the kernel's OOM killer ends it;
Clove records the exit as an OOM kill and its supervisor restarts it with backoff (restart
policy ``on-failure``). Nothing else on the rover notices.

Without a cgroup (the rlimit fallback) the allocation fails with MemoryError instead: it says so
and exits 1, which the supervisor treats the same way.
"""

from __future__ import annotations

import sys
import time

BLOCK = 8 << 20  #: bytes per allocation
PAGE = 4096


def memory_limit() -> str:
    """This cgroup's memory.max, when the sandbox lets us see it."""
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            value = f.read().strip()
        return value if value == "max" else f"{int(value) >> 20} MiB"
    except (OSError, ValueError):
        return "unknown"


def grab(held: list[bytearray]) -> None:
    """Allocate one block and touch every page of it."""
    block = bytearray(BLOCK)
    block[::PAGE] = b"\x01" * len(block[::PAGE])
    held.append(block)


def main() -> None:
    held: list[bytearray] = []
    print(f"leaker: starting; memory limit {memory_limit()}", flush=True)
    while True:  # ends when the OOM killer (or the kernel's SIGTERM) ends the process
        try:
            grab(held)
        except MemoryError:
            print(f"leaker: MemoryError while holding {len(held) * BLOCK >> 20} MiB; exiting", flush=True)
            sys.exit(1)
        print(f"leaker: holding {len(held) * BLOCK >> 20} MiB", flush=True)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
