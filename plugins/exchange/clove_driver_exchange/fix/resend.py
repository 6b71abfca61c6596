"""Answering a ResendRequest from the :class:`~clove_driver_exchange.fix.store.SeqStore`:
application messages again, with PossDupFlag=Y and OrigSendingTime; admin messages (and anything
not stored, unreadable or refused by ``should_resend``) as SequenceReset-GapFill runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

from clove_driver_exchange.fix import messages as m
from clove_driver_exchange.fix.messages import FixError, Message, Tag
from clove_driver_exchange.fix.store import SeqStore

__all__ = ["replay"]


def replay(
    store: SeqStore,
    begin: int,
    end: int,
    *,
    sender: str,
    target: str,
    clock: Callable[[], float],
    should_resend: Callable[[Message], bool] | None = None,
) -> Iterator[tuple[Literal["resent", "gap_fills"], bytes]]:
    """The messages that answer a ResendRequest for ``begin..end`` (``end`` 0: up to the last
    sent), in order, each with the session counter it adds to (``"resent"`` or ``"gap_fills"``).

    Lazy: the caller transmits each before the next is made (``should_resend`` is asked as the
    stored messages come up).
    """
    last = store.next_sender_seq - 1
    if end <= 0 or end > last:
        end = last
    if begin > end:
        return
    stamp = m.utc_timestamp(clock())
    cursor = begin  # the first number not yet resent or gap-filled
    for seq, raw in store.get_messages(begin, end):
        try:
            stored = m.parse(raw, verify=False)
        except FixError:
            continue  # unreadable: better a gap than a stall
        if should_resend is not None and not should_resend(stored):
            continue  # gap-filled with its neighbours
        if seq > cursor:
            yield "gap_fills", _gap_fill(cursor, seq, stamp, sender, target)
        yield "resent", m.encode(
            stored.msg_type, stored.body(), sender=sender, target=target,
            seq_num=seq, sending_time=stamp, poss_dup=True,
            orig_sending_time=stored.get(Tag.SENDING_TIME, stamp),
        )
        cursor = seq + 1
    if cursor <= end:
        yield "gap_fills", _gap_fill(cursor, end + 1, stamp, sender, target)


def _gap_fill(seq: int, new_seq: int, stamp: str, sender: str, target: str) -> bytes:
    """A SequenceReset-GapFill at ``seq`` that moves the counterparty on to ``new_seq``."""
    out = m.sequence_reset_gap_fill(new_seq)
    return m.encode(
        out.msg_type, out.fields, sender=sender, target=target, seq_num=seq,
        sending_time=stamp, poss_dup=True, orig_sending_time=stamp,
    )
