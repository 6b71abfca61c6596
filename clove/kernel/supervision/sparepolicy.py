"""How many spares to keep: recent spawn demand, bounded (docs/sandbox.md, "Spares").

**Demand** is spawns per window of :data:`WINDOW_S`, smoothed across windows by an EWMA (the
newest closed window weighs :data:`ALPHA`). The rate the pool follows is the larger of that
average and the current window's count so far: a burst raises the pool at once, an idle spell
halves the average every window, so the pool is back at its floor within a few seconds.

**One agent cannot inflate the pool**: its spawns add at most ``per_agent`` to a window's count,
however many it asks for. Operators and the config's agents (no parent) are bounded only by the
pool's own ceiling.

**The target** is the rate rounded, at least the floor, at most the ceiling, and at most what
memory holds (:func:`memory_room`): a spare is only worth making when the agent it would become
could run too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

WINDOW_S: Final = 0.5
ALPHA: Final = 0.5
#: What one idle spare costs, generously: its two processes (about 4 MiB PSS together,
#: measured by bench/spawn_latency.py), its cgroup, net namespace, loop device and ext4 mount.
SPARE_BYTES: Final = 8 << 20


class Demand:
    """Spawns per window, smoothed; each agent's share of a window bounded.

    :param per_agent: the most spawns one agent adds to a window.
    :param clock: seconds, monotonic (virtual in tests).
    """

    def __init__(
        self, *, per_agent: int, clock: Callable[[], float] = time.monotonic, window: float = WINDOW_S, alpha: float = ALPHA
    ) -> None:
        self.per_agent = per_agent
        self.clock = clock
        self.window = window
        self.alpha = alpha
        self.average = 0.0
        self.count = 0
        self._by_agent: dict[int, int] = {}
        self._window_end = clock() + window

    def record(self, agent: int | None) -> bool:
        """A spawn was asked for, by ``agent`` (``None``: an operator or the config); returns
        whether it counted (an agent past its share of this window does not)."""
        self._advance()
        if agent is not None:
            used = self._by_agent.get(agent, 0)
            if used >= self.per_agent:
                return False
            self._by_agent[agent] = used + 1
        self.count += 1
        return True

    def rate(self) -> float:
        """Spawns expected per window."""
        self._advance()
        return max(self.average, float(self.count))

    def _advance(self) -> None:
        now = self.clock()
        if now < self._window_end:
            return
        closed = 1 + int((now - self._window_end) // self.window)  # windows that ended, the last ones empty
        self.average = self.alpha * self.count + (1 - self.alpha) * self.average
        self.average *= (1 - self.alpha) ** (closed - 1)
        if self.average < 1e-3:
            self.average = 0.0
        self.count = 0
        self._by_agent.clear()
        self._window_end += closed * self.window


@dataclass(frozen=True, slots=True)
class PoolBounds:
    """The pool's floor (kept while idle) and ceiling."""

    minimum: int
    maximum: int


def pool_target(rate: float, bounds: PoolBounds, room: int) -> int:
    """How many spares to hold for a demand of ``rate`` spawns per window, when memory holds
    ``room`` more agents."""
    wanted = max(bounds.minimum, math.floor(rate + 0.5))
    return max(0, min(wanted, bounds.maximum, room))


def memory_room(available: int | None, agent_bytes: int) -> int:
    """How many spares memory holds, each with the agent it would become (at the default memory
    limit): with ``available`` bytes (MemAvailable; ``None``: unknown, no bound)."""
    if available is None:
        return 1 << 30
    return max(0, available // (agent_bytes + SPARE_BYTES))


def mem_available(path: str = "/proc/meminfo") -> int | None:
    """The host's MemAvailable in bytes; ``None`` when it cannot be read."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
