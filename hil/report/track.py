"""A bounded time series for the report's plots: a simulator samples into it while a bench
runs, however long the bench is.

When it is full it drops every other row and from then on keeps one sample in two (and so on):
the series always spans the whole run at an even, coarser resolution, in bounded memory.
"""

from __future__ import annotations

from typing import Any, Final, final

#: Rows kept per series at most (a 30 s bench sampled at 10 Hz keeps 300).
MAX_ROWS: Final = 20_000


@final
class Track:
    """Rows of ``(t, ...)``; :meth:`add` keeps one in ``stride`` once the series has filled up."""

    __slots__ = ("rows", "max_rows", "_stride", "_seen")

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        if max_rows < 2:
            raise ValueError("max_rows must be at least 2")
        self.rows: list[tuple[Any, ...]] = []
        self.max_rows = max_rows
        self._stride = 1
        self._seen = 0

    def add(self, *row: Any) -> None:
        self._seen += 1
        if (self._seen - 1) % self._stride:
            return
        self.rows.append(row)
        if len(self.rows) >= self.max_rows:
            del self.rows[1::2]
            self._stride *= 2
