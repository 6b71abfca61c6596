"""Group commit for the gateway's durable files: the order journal and the FIX sequence store.

A record is written to its file (``os.write``: in the page cache, so a killed process loses
nothing) the moment it is made; only the ``fdatasync`` is shared. One committer thread syncs
every file with a write waiting, once, for everything written since the last commit, then
releases what was waiting for exactly those records: an operation's reply (:meth:`GroupCommit.wait`)
and, in the order they were queued, a FIX message's transmission or a stream item
(:meth:`GroupCommit.after`). While it syncs, new records keep arriving; they form the next group.

Tickets: every write bumps one counter; a ticket is the counter's value when an action was
queued (or :meth:`GroupCommit.mark` was called), so it covers every write made before then, in
every file. A write alone starts no commit: what waits for it does (the first ``after`` or
``wait``), so the records of one operation, written one after the other, share a commit. The files of one commit are synced at the same time (a helper thread per extra
file), since a release needs all of them: a commit costs one fsync's time, not one per file.

A write that nothing waits for (an inbound sequence number: the venue resends what a crash lost,
and ExecIDs catch the duplicates) is ``urgent=False``: it makes its file dirty without forcing a
sync, and rides along with the next commit that syncs that file (or the last one, on close).

Without ``fsync`` nothing waits: actions run at once, as the file writes they follow have
already reached the kernel.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

__all__ = ["CommitFailed", "GroupCommit", "SyncedFile"]

log = logging.getLogger(__name__)

Action = Callable[[], None]


class SyncedFile(Protocol):
    """A file the committer syncs: it hands a descriptor of itself to ``sync``, outside its own
    lock, so its writers are not held up by the disk."""

    def sync_with(self, sync: Callable[[int], None]) -> None: ...


class CommitFailed(OSError):
    """What waited was never acknowledged, and never will be: a sync failed (after a failed fsync
    the page cache cannot be trusted; the host restarts from what is on disk) or the committer
    was closed first."""


class _Helper:
    """A thread that syncs one file when asked, so the files of a commit sync side by side."""

    def __init__(self, file: SyncedFile, sync: Callable[[int], None], name: str) -> None:
        self.file = file
        self._sync = sync
        self._asked: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[OSError | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def start(self) -> None:
        self._asked.put(True)

    def result(self) -> OSError | None:
        return self._done.get()

    def stop(self) -> None:
        self._asked.put(False)

    def _run(self) -> None:
        while self._asked.get():
            try:
                self.file.sync_with(self._sync)
            except OSError as err:
                self._done.put(err)
            else:
                self._done.put(None)


class GroupCommit:
    """One committer for a set of files. Thread-safe.

    :param fsync: ``False``: nothing is synced and every action runs at once.
    :param sync: the sync call (``os.fdatasync``; tests pass one that blocks or fails).
    :param on_failure: called once, on the committer thread, when a sync fails.
    """

    def __init__(
        self,
        *,
        fsync: bool = True,
        sync: Callable[[int], None] = os.fdatasync,
        on_failure: Callable[[OSError], None] | None = None,
        name: str = "group-commit",
    ) -> None:
        self.fsync = fsync
        self.name = name
        self._sync = sync
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the committer waits here for something due
        self._files: list[SyncedFile] = []
        self._helpers: dict[int, _Helper] = {}  # file index -> its helper (every file but the first)
        self._dirty: dict[int, bool] = {}  # file index -> has an urgent write since its last sync
        self._due = False  # something waits for a write: a commit is due
        self._issued = 0  # tickets handed out: one per write
        self._synced = 0  # every urgent write up to this ticket is durable
        self._actions: deque[tuple[int, Action]] = deque()
        self._waiters: list[tuple[int, int, Callable[[CommitFailed | None], None]]] = []  # a heap by ticket
        self._order = itertools.count()
        self._failed: OSError | None = None
        self._stopping = False
        #: Commits made, and the writes they covered (``records / commits``: the group size).
        self.commits = 0
        self.records = 0
        self._thread: threading.Thread | None = None
        if fsync:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    # ---- writers --------------------------------------------------------------------------------

    def add(self, file: SyncedFile) -> Callable[[bool], None]:
        """Sync ``file`` in every commit it has writes for; returns what the file calls after
        each write: ``wrote(urgent)``."""
        with self._lock:
            index = len(self._files)
            self._files.append(file)
            if self.fsync and index > 0:
                self._helpers[index] = _Helper(file, self._sync, f"{self.name}-{index}")

        def wrote(urgent: bool = True) -> None:
            if not self.fsync:
                return
            with self._lock:  # no commit yet: the writer's wait or after() asks for one, so an
                self._issued += 1  # order's journal record and its FIX message share it
                self._dirty[index] = urgent or self._dirty.get(index, False)

        return wrote

    def mark(self) -> int:
        """A ticket covering every write made so far."""
        with self._lock:
            return self._issued

    # ---- what waits -----------------------------------------------------------------------------

    def after(self, action: Action) -> None:
        """Run ``action`` on the committer thread once every write made so far is durable, after
        the actions queued before it. It never runs if a sync fails."""
        if not self.fsync:
            action()
            return
        with self._lock:
            if self._failed is not None or self._thread is None:
                return
            self._actions.append((self._issued, action))
            self._due = True
            self._work.notify()

    def wait(self, ticket: int) -> None:
        """Block until ``ticket`` is durable.

        :raises CommitFailed: a sync failed first, or the committer was closed.
        """
        if not self.fsync:
            return
        outcome: list[CommitFailed | None] = []
        woken = threading.Lock()
        woken.acquire()

        def wake(error: CommitFailed | None) -> None:
            outcome.append(error)
            woken.release()

        self.notify(ticket, wake)
        woken.acquire()  # the committer releases it: durable, failed or closed
        if outcome[0] is not None:
            raise outcome[0]

    def notify(self, ticket: int, done: Callable[[CommitFailed | None], None]) -> None:
        """Call ``done(None)`` once ``ticket`` is durable, or ``done(CommitFailed)`` if a sync
        fails or the committer closes first: at once (on this thread) when that is known already,
        else on the committer's thread, in ticket order. Never both, never twice."""
        if not self.fsync:
            done(None)
            return
        with self._lock:
            if ticket > self._synced:
                error = self._failure()
                if error is None:
                    heapq.heappush(self._waiters, (ticket, next(self._order), done))
                    self._due = True
                    self._work.notify()
                    return
            else:
                error = None
        done(error)

    def _failure(self) -> CommitFailed | None:
        """(Lock held.) Why nothing more becomes durable, or ``None``."""
        if self._failed is not None:
            return CommitFailed(f"the order journal could not be made durable: {self._failed}")
        if self._thread is None:
            return CommitFailed("the order journal was closed before this was durable")
        return None

    @property
    def failed(self) -> OSError | None:
        return self._failed

    # ---- the committer --------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is written (lazy writes too), release it, and stop the committer."""
        with self._lock:
            self._stopping = True
            self._due = True
            self._work.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            self._thread = None
            woken = self._due_waiters(everyone=True)
        self._wake(woken)
        if thread is None or not thread.is_alive():  # a committer stuck in a sync still needs them
            for helper in self._helpers.values():
                helper.stop()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._due:
                    self._work.wait()
                self._due = False
                ticket, stopping = self._issued, self._stopping
                # Files with only lazy writes wait for a commit that needs them (or the last one).
                due = sorted(i for i, urgent in self._dirty.items() if urgent or stopping)
                for i in due:
                    del self._dirty[i]
            if due and not self._commit(due):
                return
            with self._lock:
                if due:
                    self.commits += 1
                    self.records += ticket - self._synced
                self._synced = max(self._synced, ticket)
                ready: list[Action] = []
                while self._actions and self._actions[0][0] <= self._synced:
                    ready.append(self._actions.popleft()[1])
                woken = self._due_waiters()
            self._wake(woken)
            for action in ready:
                try:
                    action()
                except Exception:  # noqa: BLE001 - one release's bug must not stop the others
                    log.exception("an action released by the group commit failed")
            if stopping:
                with self._lock:
                    if not self._dirty and not self._actions:
                        return
                    self._due = True  # what arrived during the last commit

    def _commit(self, due: list[int]) -> bool:
        """Sync the files at indexes ``due`` side by side; on a failure, fail everything."""
        helped = [self._helpers[i] for i in due[1:]]  # the first due file is synced here
        for helper in helped:
            helper.start()
        errors: list[OSError] = []
        try:
            self._files[due[0]].sync_with(self._sync)
        except OSError as err:
            errors.append(err)
        errors.extend(err for err in (helper.result() for helper in helped) if err is not None)
        if not errors:
            return True
        log.error("group commit: sync failed: %s", errors[0])
        with self._lock:
            self._failed = errors[0]
            self._actions.clear()
            woken = self._due_waiters(everyone=True)
        self._wake(woken)
        if self._on_failure is not None:
            self._on_failure(errors[0])
        return False

    def _due_waiters(self, everyone: bool = False) -> list[tuple[Callable[[CommitFailed | None], None], CommitFailed | None]]:
        """(Lock held.) Take the waiters whose ticket is durable (all of them, on a failure or
        close) with what each is told; :meth:`_wake` tells them outside the lock."""
        waiters, due = self._waiters, []
        while waiters and (everyone or waiters[0][0] <= self._synced):
            ticket, _, done = heapq.heappop(waiters)
            due.append((done, None if ticket <= self._synced else self._failure() or CommitFailed("the order journal was closed before this was durable")))
        return due

    @staticmethod
    def _wake(due: list[tuple[Callable[[CommitFailed | None], None], CommitFailed | None]]) -> None:
        for done, error in due:
            try:
                done(error)
            except Exception:  # noqa: BLE001 - one waiter's bug must not stop the others
                log.exception("a group commit waiter failed")
