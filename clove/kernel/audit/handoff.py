"""The loop thread's side of the hand-off to the writer: batching and group commit.

Appended lines are batched and cut, with the rotations and deletions between them, into an
ordered list of items (:data:`~clove.kernel.audit.writer.Item`); :meth:`HandOff.hand_off` puts
the list on the writer's queue in one piece (one wake-up). :meth:`HandOff.write_now` is the group
commit: when the writer holds nothing older, the loop writes the lines itself, one ``write`` to
the page cache and no thread hand-off, under the writer's lock
(:meth:`~clove.kernel.audit.writer.Writer.write_on_loop`). Loop thread only.
"""

from __future__ import annotations

import queue
from typing import cast, final

from clove.kernel.audit.format import GENESIS_HASH
from clove.kernel.audit.writer import Delete, Item, Lines, Rotate, Writer

__all__ = ["HandOff"]

_MAX_BATCH = 256  # lines batched before a hand-off regardless of time


@final
class HandOff:
    """What the loop has appended and not yet handed to the writer.

    :param writer: the writer thread the items go to.
    :param batching: keep lines until :meth:`hand_off`; otherwise :meth:`add` and :meth:`command`
        ask for a hand-off at once.
    """

    def __init__(self, writer: Writer, *, batching: bool) -> None:
        self._writer = writer
        self._batching = batching
        self._batch: list[bytes] = []
        self._batch_first_id = 0
        self._batch_last_id, self._batch_last_hash = 0, GENESIS_HASH
        self._outbox: list[Item] = []  # cut batches and commands, in order, for the next hand-off
        self._next_lines_gap = False
        # Items handed to the writer (here) and finished by it (Writer._done, under its
        # _write_lock): equal when the writer holds nothing, so the loop may write the next lines
        # itself (write_now).
        self._handed = 0

    @property
    def pending(self) -> bool:
        """Lines or commands not yet handed to the writer."""
        return bool(self._batch or self._outbox)

    @property
    def gap_next(self) -> bool:
        """The next lines cut start with a ``journal.gap`` record (the file must not rotate
        before it: it follows the last record written)."""
        return self._next_lines_gap

    def add(self, record_id: int, record_hash: str, line: bytes) -> bool:
        """Batch record ``record_id``'s line; ``True``: hand off now (not batching, or the
        batch is full)."""
        if not self._batch:
            self._batch_first_id = record_id
        self._batch.append(line)
        self._batch_last_id, self._batch_last_hash = record_id, record_hash
        return not self._batching or len(self._batch) >= _MAX_BATCH

    def command(self, item: Rotate | Delete) -> bool:
        """Queue a rotation or deletion after the lines batched so far; ``True``: hand off now."""
        self.cut()
        self._outbox.append(item)
        return not self._batching

    def start_gap(self) -> None:
        """The lines batched so far go to the writer (which discards them); the next record
        added is a ``journal.gap`` record, where the writer writes again."""
        self.cut()
        self._next_lines_gap = True

    def cut(self) -> None:
        """Close the current batch into one item."""
        if self._batch:
            data, self._batch = b"".join(self._batch), []
            self._outbox.append(Lines(self._batch_first_id, self._batch_last_id, self._batch_last_hash, data, self._next_lines_gap))
            self._next_lines_gap = False

    def hand_off(self, work: queue.SimpleQueue[list[Item] | None]) -> None:
        """Put everything cut and batched on ``work`` (the writer's queue) in one piece."""
        self.cut()
        if self._outbox:
            items, self._outbox = self._outbox, []
            self._handed += len(items)
            work.put(items)

    def write_now(self, work: queue.SimpleQueue[list[Item] | None]) -> bool | None:
        """Write what is batched on this thread, if only lines are waiting and the writer holds
        nothing older (:meth:`Writer.write_on_loop`).

        :returns: ``None`` if nothing is waiting; ``True`` once written (``work`` is woken if
            the writer must sync); ``False`` if that is up to the writer thread.
        """
        self.cut()
        if not self._outbox:
            return None
        if not all(isinstance(item, Lines) for item in self._outbox):
            return False
        written, wake_writer = self._writer.write_on_loop(cast("list[Lines]", self._outbox), self._handed)
        if not written:
            return False
        self._outbox = []
        if wake_writer:
            work.put([])
        return True
