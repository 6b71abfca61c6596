"""A pool of daemon threads for blocking work (HTTP, LLM calls) that talks to the kernel's loop
only through two queues and a wake-up pipe. The loop thread submits jobs and collects outcomes;
worker threads never touch kernel state."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Final, final

DEFAULT_WORKERS: Final = 8
SHUTDOWN_WAIT: Final = 1.0


@final
class WorkerPool:
    """Daemon threads that run ``work(payload)`` for jobs submitted from the loop thread.

    Outcomes (the return value, or the exception raised) come back through a queue; each one
    also writes a byte to a non-blocking pipe whose read end (:meth:`fileno`) the loop watches,
    and the loop collects them with :meth:`completed`. Threads start on demand, up to
    ``max_workers``. :meth:`submit`, :meth:`completed` and :meth:`close` are loop-thread only.
    """

    def __init__(self, work: Callable[[Any], Any], *, max_workers: int = DEFAULT_WORKERS, name: str = "clove-worker") -> None:
        self._work = work
        self.max_workers = max_workers
        self._name = name
        self._inbox: queue.SimpleQueue[tuple[int, Any] | None] = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue[tuple[int, Any, bool]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._threads: list[threading.Thread] = []
        self.busy = 0
        self.closed = False

    def fileno(self) -> int:
        return self._wake_r

    @property
    def threads(self) -> int:
        return len(self._threads)

    def submit(self, key: int, payload: Any) -> None:
        if self.closed:
            raise RuntimeError("the pool is closed")
        self.busy += 1
        if self.busy > len(self._threads) and len(self._threads) < self.max_workers:
            thread = threading.Thread(target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._inbox.put((key, payload))

    def completed(self) -> list[tuple[int, Any, bool]]:
        """``(key, outcome, failed)`` for every job finished since the last call."""
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        out = []
        while True:
            try:
                out.append(self._outbox.get_nowait())
            except queue.Empty:
                break
        self.busy -= len(out)
        return out

    def close(self, wait: float = SHUTDOWN_WAIT) -> bool:
        """Stop the threads: those idle exit at once, busy ones after their job. Waits at most
        ``wait`` seconds in all; returns whether every thread ended. The pipe stays open while
        a thread may still write to it."""
        if self.closed:
            return not any(t.is_alive() for t in self._threads)
        self.closed = True
        for _ in self._threads:
            self._inbox.put(None)
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stopped = not any(t.is_alive() for t in self._threads)
        if stopped:
            os.close(self._wake_r)
            os.close(self._wake_w)
        return stopped

    def _run(self) -> None:
        while (job := self._inbox.get()) is not None:
            key, payload = job
            try:
                outcome, failed = self._work(payload), False
            except BaseException as err:  # noqa: BLE001 - the outcome is the exception itself
                outcome, failed = err, True
            self._outbox.put((key, outcome, failed))
            with contextlib.suppress(OSError):  # a full pipe: the loop wakes anyway
                os.write(self._wake_w, b"\0")
