"""Replies held until their journal record is written: the group commit (docs/containment.md,
"Records before replies").

A successful reply to a call that changes something waits here, in record order, until the
journal's writer has handed its record to the OS. Once per loop turn (after each socket's batch,
and from housekeeping) :meth:`HeldReplies.commit` writes the turn's records in one ``write``
(on the loop thread when the writer thread holds nothing older, else through it) and releases
what is written; the journal's eventfd releases what the writer thread writes later. A reply
held longer than :data:`HOLD_TIMEOUT_S` leaves anyway: the journal is failing, and the
``journal.gap`` record it writes once it can names what was lost.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Protocol

import zmq

from clove.kernel.core.loop import Loop

log = logging.getLogger(__name__)

#: A reply held longer than this leaves anyway (the journal is failing).
HOLD_TIMEOUT_S = 2.0
#: With no reply waiting, records batched by read-only calls are written on the loop at most
#: this often (seconds), not handed to the writer thread: a ``write`` instead of waking a
#: thread that then competes with the loop for the interpreter.
IDLE_WRITE_INTERVAL_S = 0.001

Send = Callable[["zmq.Socket[bytes]", bytes, list[bytes]], None]


class CommitJournal(Protocol):
    """What the group commit uses of the journal (:class:`~clove.kernel.audit.journal.Journal`)."""

    @property
    def written_id(self) -> int: ...

    @property
    def batch_pending(self) -> bool: ...

    def written_fd(self) -> int: ...

    def write_now(self) -> bool: ...

    def hand_off(self) -> None: ...


class HeldReplies:
    """Replies waiting for their record: ``(record id, held since, socket, routing id, frames)``.

    :param send: sends one reply (the dispatcher's, which never raises).
    """

    def __init__(self, journal: CommitJournal, loop: Loop, send: Send) -> None:
        self.journal = journal
        self.loop = loop
        self._send = send
        self.held: deque[tuple[int, float, zmq.Socket[bytes], bytes, list[bytes]]] = deque()
        self._watching = False
        self._next_write = 0.0

    def hold(self, record_id: int, sock: zmq.Socket[bytes], routing: bytes, frames: list[bytes]) -> None:
        """Send ``frames`` once record ``record_id`` is written."""
        if not self._watching:
            self._watching = True
            self.loop.add_reader(self.journal.written_fd(), self._on_written)
        self.held.append((record_id, self.loop.clock(), sock, routing, frames))

    def commit(self) -> None:
        """Write the held replies' records (one write for all of them, on this thread when the
        writer thread is idle, else handed to it at once rather than at the next hand-off tick),
        release what is written, expire stuck replies. With none held, write what read-only
        calls batched, at most every :data:`IDLE_WRITE_INTERVAL_S` (else the journal's hand-off
        takes it to the writer thread, as it does when this cannot write now)."""
        journal = self.journal
        if not self.held:
            if journal.batch_pending:
                now = self.loop.clock()
                if now >= self._next_write:
                    self._next_write = now + IDLE_WRITE_INTERVAL_S
                    journal.write_now()
            return
        if journal.write_now():
            self.release()
            return
        if journal.batch_pending:
            journal.hand_off()
        if self.loop.clock() - self.held[0][1] > HOLD_TIMEOUT_S:
            log.warning("journal writes are failing: %d replies sent before their records were written", len(self.held))
            self.release(everything=True)

    def _on_written(self) -> None:
        try:
            os.eventfd_read(self.journal.written_fd())
        except BlockingIOError:
            pass
        self.release()

    def release(self, *, everything: bool = False) -> None:
        """Send the replies whose records are written (all of them with ``everything``)."""
        written = self.journal.written_id
        held = self.held
        while held and (everything or held[0][0] <= written):
            _, _, sock, routing, frames = held.popleft()
            if not sock.closed:
                self._send(sock, routing, frames)
