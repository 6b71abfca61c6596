"""A runaway agent: burns CPU in a tight loop until the kernel stops it.

Its cgroup's CPU quota throttles it (it is never killed for this): every 2 s it prints how many
loop iterations it managed per second and how much of one core it really got, which is the
quota, not 100 %. The agents beside it (the navigator's 20 Hz loop) keep their timing.
"""

from __future__ import annotations

import signal
import time

REPORT_EVERY = 2.0  #: seconds
CHUNK = 200_000  #: iterations between clock reads (keeps the loop tight)

stopping = False


def _stop(*_: object) -> None:
    global stopping
    stopping = True


def throttled_periods() -> int | None:
    """``nr_throttled`` from this cgroup's cpu.stat, when the sandbox lets us see it."""
    try:
        with open("/sys/fs/cgroup/cpu.stat") as stat:
            for line in stat:
                key, _, value = line.partition(" ")
                if key == "nr_throttled":
                    return int(value)
    except (OSError, ValueError):
        pass
    return None


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    print("cpu_hog: spinning until stopped", flush=True)
    total = 0
    wall, cpu = time.monotonic(), time.process_time()
    while not stopping:
        n = 0
        while n < CHUNK:  # the hog: pure interpreter work, no system calls
            n += 1
        total += CHUNK
        now = time.monotonic()
        if now - wall >= REPORT_EVERY:
            used = time.process_time()
            rate = total / (now - wall)
            share = (used - cpu) / (now - wall) * 100.0
            throttled = throttled_periods()
            extra = "" if throttled is None else f", throttled {throttled} periods so far"
            print(f"cpu_hog: {rate / 1e6:.1f} M iterations/s, {share:.0f}% of one core{extra}", flush=True)
            total, wall, cpu = 0, now, used
    print("cpu_hog: stopped", flush=True)


if __name__ == "__main__":
    main()
