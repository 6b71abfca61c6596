"""A fake ``fdatasync`` for the durability tests (the group commit's and the driver's)."""

from __future__ import annotations

import threading


class Disk:
    """A fake fdatasync. While held (:meth:`hold`), a sync counts itself as started, then blocks
    until :meth:`step` lets one through or :meth:`release` lets all through."""

    def __init__(self) -> None:
        self.held = False
        self.permits = threading.Semaphore(0)
        self.lock = threading.Lock()
        self.started = 0
        self.synced: list[int] = []
        self.fail: OSError | None = None

    def hold(self) -> None:
        self.held = True

    def step(self) -> None:
        self.permits.release()

    def release(self) -> None:
        self.held = False
        self.permits.release(100)

    def __call__(self, fd: int) -> None:
        with self.lock:
            self.started += 1
        if self.held:
            assert self.permits.acquire(timeout=10), "the test never released the sync"
        if self.fail is not None:
            raise self.fail
        with self.lock:
            self.synced.append(fd)
