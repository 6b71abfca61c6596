"""Denial aggregation (loop thread): denials beyond a burst are counted, not written one by one.

After ``denial_burst`` denials from one agent within ``denial_window`` seconds, further denials
are counted per (syscall, code, reason) and written as one ``denials.aggregated`` record per
window when it ends (:meth:`Denials.roll_ended`, from the journal's ``tick``) or when the
journal closes (:meth:`Denials.flush_all`). A window that counted denials makes the next one count
from its first denial, so a steady flood costs one record per window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, final

from clove.config import JournalSection
from clove.kernel.audit.format import AGGREGATED_EVENT

__all__ = ["Denials"]

_MAX_DENIAL_KEYS = 32  # (syscall, code) pairs counted apart per agent and window; agents choose syscall names


@dataclass(slots=True)
class _DenialBucket:
    category: str
    event_type: str
    agent_name: str | None
    first_time: float
    last_time: float
    count: int = 0
    other_syscalls: bool = False  # past _MAX_DENIAL_KEYS: several syscall names share this count


@dataclass(slots=True)
class _DenialWindow:
    start: float  # monotonic
    count: int = 0  # denials in this window, written or counted
    aggregating: bool = False
    buckets: dict[tuple[str | None, str, str | None], _DenialBucket] = field(default_factory=dict)


@final
class Denials:
    """The denial windows of every agent that was denied lately. Loop thread only.

    :param settings: ``denial_burst`` and ``denial_window``.
    :param clock: the epoch seconds of ``first_time``/``last_time`` and of the records.
    :param monotonic: the clock of the windows.
    :param append: appends a record's fields (every key but ``id``, ``prev_hash`` and ``hash``)
        to the journal.
    :param summarize: bounds a record's ``details`` (``value, max_str, max_items, max_depth``).
    """

    def __init__(
        self,
        settings: JournalSection,
        *,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        append: Callable[[dict[str, Any]], object],
        summarize: Callable[[Any, int, int, int], Any],
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._monotonic = monotonic
        self._append = append
        self._summarize = summarize
        self._denials: dict[int | None, _DenialWindow] = {}

    def count(self, category: str, event_type: str, agent_id: int | None, agent_name: str | None,
              syscall: str | None, code: str, reason: str | None = None) -> bool:  # fmt: skip
        """Count a denial in its agent's window; ``True`` if it is aggregated, not written.
        Counts are kept per (syscall, code, reason): a denial's ``details.reason`` (a risk check's
        name, say) is what an operator asks about, so an aggregate keeps it."""
        now = self._monotonic()
        window = self._denials.get(agent_id)
        if window is not None and now >= window.start + self._settings.denial_window:
            window = self._roll_window(agent_id, window, now)
        if window is None:
            window = self._denials[agent_id] = _DenialWindow(start=now)
        window.count += 1
        if not window.aggregating:
            if window.count <= self._settings.denial_burst:
                return False
            window.aggregating = True
        key = (syscall, code, reason)
        bucket = window.buckets.get(key)
        other = False
        if bucket is None and len(window.buckets) >= _MAX_DENIAL_KEYS:
            key, other = (None, code, None), True  # an agent inventing syscall names gets one count per code
            bucket = window.buckets.get(key)
        wall = float(self._clock())
        if bucket is None:
            bucket = window.buckets[key] = _DenialBucket(category, event_type, agent_name, wall, wall)
        bucket.count += 1
        bucket.last_time = wall
        bucket.other_syscalls |= other
        return True

    def roll_ended(self, now: float) -> None:
        """Write the aggregates of the windows that have ended by ``now`` (monotonic)."""
        if self._denials:
            span = self._settings.denial_window
            for agent_id, window in list(self._denials.items()):
                if now >= window.start + span:
                    self._roll_window(agent_id, window, now)

    def flush_all(self) -> None:
        """Write the aggregates of every open window and forget the windows (at close)."""
        for agent_id, window in list(self._denials.items()):
            self._flush_denials(agent_id, window)
        self._denials.clear()

    def _roll_window(self, agent_id: int | None, window: _DenialWindow, now: float) -> _DenialWindow | None:
        """Write the ended window's aggregates; the agent's next window, or ``None`` if idle."""
        self._flush_denials(agent_id, window)
        span = self._settings.denial_window
        end = window.start + span
        if window.count == 0:
            del self._denials[agent_id]
            return None
        follows = now < end + span  # the next window has begun, not passed: a flood carries over
        nxt = _DenialWindow(start=end if follows else now, aggregating=follows and window.count > self._settings.denial_burst)
        self._denials[agent_id] = nxt
        return nxt

    def _flush_denials(self, agent_id: int | None, window: _DenialWindow) -> None:
        for (syscall, code, reason), bucket in window.buckets.items():
            details: dict[str, Any] = {"count": bucket.count, "first_time": bucket.first_time, "last_time": bucket.last_time,
                                       "window_s": self._settings.denial_window, "burst": self._settings.denial_burst,
                                       "event_type": bucket.event_type}  # fmt: skip
            if bucket.other_syscalls:
                details["other_syscalls"] = True
            if reason is not None:
                details["reason"] = reason
            self._append({"timestamp": float(self._clock()), "category": bucket.category, "event_type": AGGREGATED_EVENT,
                          "agent_id": agent_id, "agent_name": bucket.agent_name, "syscall": syscall, "args": None,
                          "decision": "denied", "code": code, "duration_us": None,
                          "details": self._summarize(details, 2000, 100, 6)})  # fmt: skip
        window.buckets.clear()
